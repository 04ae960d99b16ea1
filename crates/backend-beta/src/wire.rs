//! Mode S over the connection (`wire-sync`): no shared staging directory.
//!
//! The narrow entry points are [`start_session`] (called when a connection opens: picks
//! shared staging or `wire_start` per `DEVSHELL_VM_BETA_SYNC` and the sidecar's offer)
//! and [`WireClient::run`] / [`WireClient::push`] (the push–exec–pull cycle of one
//! project). The protocol is specified in `docs/arch/wire-sync.md`.
//!
//! For each project the client keeps the [`Manifest`] it believes the sidecar has, the
//! VFS generation the sidecar acknowledged (`acked`) and a random `epoch` naming this
//! VFS's history. A push sends what the VFS journal
//! ([`Vfs::changes_since`]) reports since `acked` when the sidecar's `wire_project`
//! answer (epoch, generation, tree digest) shows it still holds exactly that state;
//! otherwise a full manifest (the sidecar answers with what differs). Contents travel
//! only for the digests the sidecar lacks. A pull is received completely — every blob
//! verified — and applied to a clone of the VFS, which replaces the VFS only when it all
//! applied: a connection lost mid-pull leaves the VFS as it was. Any failure forgets
//! `acked`, so the next run starts with a full manifest.

use std::collections::HashMap;
use std::time::Instant;

use devshell_vm_config::BetaSync;
use devshell_vm_exec::ExecOutcome;
use devshell_vm_protocol::{
    ErrorCode, GuestFs, GuestFsOperation, Manifest, Reply, Request, SessionStart, WireBlobs,
    WireEntry, WireKind, WireProject, WireProjectOk, WirePull, WirePullDone, WirePush, WireStart,
    WireWant, digest_hex,
};
use devshell_vm_sync::wire::{
    apply_changes, entries_in_parallel, entry_of, entry_of_node, entry_of_node_unhashed, join,
    relative,
};
use devshell_vm_sync::{DEFAULT_MAX_FILE_SIZE, SyncReport, ToolOutcome};
use devshell_vm_vfs::{Content, Vfs, VfsError};

use crate::BetaError;
use crate::conn::Connection;
use crate::link::Link;

/// How long `wire_project` is retried while the sidecar reports the copy busy.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Name of the probe file that tells whether the sidecar sees our staging directory.
const PROBE_NAME: &str = ".devshell-vm-share-probe";

/// Starts the sidecar session on a fresh connection: shared staging (`session_start`)
/// or `wire_start`, per `sync` and the sidecar's offer. With `auto`, staging counts as
/// shared when the sidecar accepts it and reads back a random probe written here.
///
/// # Errors
/// [`BetaError::WireUnavailable`] for `wire` without the capability; the requests'
/// own failures.
pub(crate) fn start_session(
    conn: &mut Connection,
    sync: BetaSync,
    start: SessionStart,
    staging: &std::path::Path,
    client_id: &str,
) -> Result<(), BetaError> {
    let wire_start =
        |conn: &mut Connection, start: &SessionStart| open_wire(conn, start, client_id);
    match sync {
        BetaSync::Shared => conn.start_session(start),
        BetaSync::Wire if conn.caps.wire_sync => wire_start(conn, &start),
        BetaSync::Wire => Err(BetaError::WireUnavailable {
            transport: conn.transport().to_owned(),
        }),
        BetaSync::Auto if !conn.caps.wire_sync => conn.start_session(start),
        BetaSync::Auto => match conn.start_session(start.clone()) {
            Ok(()) if staging_is_shared(conn, staging, &start)? => Ok(()),
            Ok(()) => wire_start(conn, &start),
            Err(BetaError::Remote { code, .. }) if code == ErrorCode::BadStagingDir.as_str() => {
                wire_start(conn, &start)
            }
            Err(err) => Err(err),
        },
    }
}

fn open_wire(
    conn: &mut Connection,
    start: &SessionStart,
    client_id: &str,
) -> Result<(), BetaError> {
    let request = Request::WireStart(WireStart {
        session_id: start.session_id.clone(),
        client_id: client_id.to_owned(),
        guest_workspace: start.guest_workspace.clone(),
    });
    match conn.request(&request)? {
        Reply::WireStarted(_) => {
            conn.session_id = Some(start.session_id.clone());
            conn.wire = true;
            Ok(())
        }
        Reply::Error(err) => Err(BetaError::Remote {
            during: "wire_start".to_owned(),
            code: err.code.to_string(),
            message: err.message,
        }),
        other => Err(conn.unexpected("wire_start", &other)),
    }
}

/// Writes a random probe into local staging and asks the sidecar to read it back.
fn staging_is_shared(
    conn: &mut Connection,
    staging: &std::path::Path,
    start: &SessionStart,
) -> Result<bool, BetaError> {
    let token = fresh_epoch();
    let probe = staging.join(PROBE_NAME);
    if std::fs::write(&probe, token.as_bytes()).is_err() {
        return Ok(false);
    }
    let guest_path = if start.guest_workspace == "/" {
        format!("/{PROBE_NAME}")
    } else {
        format!("{}/{PROBE_NAME}", start.guest_workspace)
    };
    let reply = conn.request(&Request::GuestFs(GuestFs {
        session_id: start.session_id.clone(),
        operation: GuestFsOperation::ReadFile,
        guest_path,
        content_base64: None,
        to_path: None,
    }));
    let _ = std::fs::remove_file(&probe);
    Ok(match reply? {
        Reply::GuestFsOk(ok) => ok
            .content()
            .ok()
            .flatten()
            .is_some_and(|content| content == token.as_bytes()),
        _ => false,
    })
}

/// A stable id of this client: host name and user, hashed (the sidecar derives its
/// store from it and the token, so the next session of the same user on the same host
/// finds its copies again).
pub(crate) fn client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let uid = nix::unistd::getuid().as_raw();
    let id = digest_hex(format!("devshell-vm client\0{}\0{uid}", host.trim()).as_bytes());
    id[..32].to_owned()
}

/// A fresh random-enough epoch: BLAKE3 of the pid, the time, a counter and an address.
fn fresh_epoch() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let local = 0u8;
    let seed = format!(
        "{}\0{now}\0{}\0{:p}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        &raw const local
    );
    digest_hex(seed.as_bytes())[..32].to_owned()
}

/// What the client knows about one project's copy on the sidecar.
#[derive(Debug)]
struct WireProjectState {
    vfs_root: String,
    epoch: String,
    /// The VFS generation the sidecar's copy matches (`None`: unknown, full push next).
    acked: Option<u64>,
    /// What the sidecar's copy holds (valid while `acked` is `Some`).
    manifest: Manifest,
    /// `Link::connects` of the connection `wire_project` was answered on.
    opened_on: Option<u64>,
    /// The sidecar's state as `wire_project` reported it.
    remote: Option<WireProjectOk>,
}

impl WireProjectState {
    fn forget(&mut self) {
        self.acked = None;
        self.opened_on = None;
        self.remote = None;
    }
}

/// Per-session `wire-sync` state: one entry per project root.
#[derive(Debug, Default)]
pub(crate) struct WireClient {
    projects: Vec<WireProjectState>,
    /// Pull excludes, sent with every `wire_project`.
    excludes: Vec<String>,
}

/// The bytes of a push or pull, for reports.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    files: u64,
    bytes: u64,
    dirs: u64,
    deleted: u64,
}

impl Counts {
    fn add(&mut self, entry: &WireEntry) {
        match entry.kind {
            WireKind::Dir => self.dirs += 1,
            WireKind::File | WireKind::Symlink => {
                self.files += 1;
                self.bytes += entry.size;
            }
        }
    }

    fn report(self, started: Instant) -> SyncReport {
        SyncReport {
            files_written: self.files,
            bytes_written: self.bytes,
            dirs_created: self.dirs,
            deleted: self.deleted,
            duration: started.elapsed(),
            ..SyncReport::default()
        }
    }
}

fn wire_error(vfs_path: &str, reason: impl Into<String>) -> BetaError {
    BetaError::Wire {
        vfs_path: vfs_path.to_owned(),
        reason: reason.into(),
    }
}

fn remote(during: &str, err: devshell_vm_protocol::ErrorReply) -> BetaError {
    BetaError::Remote {
        during: during.to_owned(),
        code: err.code.to_string(),
        message: err.message,
    }
}

impl WireClient {
    /// Sets the pull excludes (sent when a project is next opened: every project is
    /// re-opened so the sidecar applies them).
    pub(crate) fn set_excludes(&mut self, globs: &[&str]) {
        self.excludes = globs.iter().map(|g| (*g).to_owned()).collect();
        for project in &mut self.projects {
            project.opened_on = None;
        }
    }

    /// Forgets every project (session shutdown).
    pub(crate) fn clear(&mut self) {
        self.projects.clear();
    }

    fn project_index(&mut self, vfs_root: &str) -> usize {
        if let Some(i) = self.projects.iter().position(|p| p.vfs_root == vfs_root) {
            return i;
        }
        self.projects.push(WireProjectState {
            vfs_root: vfs_root.to_owned(),
            epoch: fresh_epoch(),
            acked: None,
            manifest: Manifest::default(),
            opened_on: None,
            remote: None,
        });
        self.projects.len() - 1
    }

    /// Pushes the project of `vfs_cwd` (ensure-ready). Returns the report.
    ///
    /// # Errors
    /// Connection failures, refusals, [`BetaError::Wire`].
    pub(crate) fn push(
        &mut self,
        link: &mut Link,
        vfs: &Vfs,
        vfs_cwd: &str,
    ) -> Result<SyncReport, BetaError> {
        let (root, _) = devshell_vm_session::locate(vfs, vfs_cwd)?;
        let index = self.project_index(&root);
        let project = &mut self.projects[index];
        let result = push_project(link, project, vfs, &self.excludes);
        if result.is_err() {
            project.forget();
        }
        result
    }

    /// The Mode S cycle over the wire: push, `exec` (through `run`, given the guest cwd
    /// and the cwd relative to the project root), then — when the exec returned — pull.
    ///
    /// # Errors
    /// Push failures (nothing ran, the VFS is unchanged), the runner's error, pull
    /// failures ([`BetaError::PullAfterRun`]-like [`BetaError::Wire`]; the VFS is
    /// unchanged and the next run resynchronises).
    pub(crate) fn run(
        &mut self,
        link: &mut Link,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        run: impl FnOnce(&mut Link, &str, &str) -> Result<ExecOutcome, BetaError>,
    ) -> Result<ToolOutcome, BetaError> {
        let (root, relative_cwd) = devshell_vm_session::locate(vfs, vfs_cwd)?;
        let index = self.project_index(&root);
        let project = &mut self.projects[index];
        let push = match push_project(link, project, vfs, &self.excludes) {
            Ok(report) => report,
            Err(err) => {
                project.forget();
                return Err(err);
            }
        };
        let guest_dir = project
            .remote
            .as_ref()
            .map(|r| r.guest_dir.clone())
            .unwrap_or_default();
        let guest_cwd = if relative_cwd.is_empty() {
            guest_dir
        } else {
            format!("{guest_dir}/{relative_cwd}")
        };
        let exec = match run(link, &guest_cwd, &relative_cwd) {
            Ok(exec) => exec,
            Err(err) => {
                // The copy stays on the sidecar; the next run compares and resumes.
                project.forget();
                return Err(err);
            }
        };
        let pull = match pull_project(link, project, vfs) {
            Ok(report) => report,
            Err(err) => {
                project.forget();
                return Err(err);
            }
        };
        Ok(ToolOutcome {
            exec,
            push,
            pull: Some(pull),
        })
    }
}

/// Opens the project on the current connection if it is not open there yet.
fn open_project(
    link: &mut Link,
    project: &mut WireProjectState,
    excludes: &[String],
) -> Result<(), BetaError> {
    let connects_before = link.connects;
    link.connection()?;
    if link.connects != connects_before || project.opened_on != Some(link.connects) {
        project.opened_on = None;
        project.remote = None;
    }
    if project.opened_on.is_some() {
        return Ok(());
    }
    // A connection that just broke may still hold the copy on the sidecar for a moment
    // (until its thread sees the end of the stream): `wire_busy` is retried briefly.
    let give_up = Instant::now() + BUSY_RETRY;
    let reply = loop {
        let reply = link.call(|session_id| {
            Request::WireProject(WireProject {
                session_id,
                project: project.vfs_root.clone(),
                excludes: excludes.to_vec(),
            })
        })?;
        match reply {
            Reply::Error(err) if err.code == ErrorCode::WireBusy && Instant::now() < give_up => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => break other,
        }
    };
    match reply {
        Reply::WireProjectOk(ok) => {
            project.opened_on = Some(link.connects);
            project.remote = Some(*ok);
            Ok(())
        }
        Reply::Error(err) => Err(remote("wire_project", err)),
        other => Err(link.unexpected("wire_project", &other)),
    }
}

/// Whether the sidecar's copy is exactly what `project` last synchronised.
fn in_step(project: &WireProjectState) -> bool {
    let Some(remote) = &project.remote else {
        return false;
    };
    project.acked.is_some()
        && remote.epoch.as_deref() == Some(project.epoch.as_str())
        && remote.generation == project.acked
        && remote.tree_digest == project.manifest.tree_digest()
}

/// The wire entries (and file contents) of the walked nodes under `root`, in order, the
/// root itself left out. Hashing is the bulk of a full push's work on this side, so the
/// nodes are shared out over the available cores.
fn entries_of(
    root: &str,
    walked: &[devshell_vm_vfs::WalkEntry<'_>],
) -> Result<Vec<(WireEntry, Option<Content>)>, BetaError> {
    entries_in_parallel(walked.len(), 256, |index| {
        let item = &walked[index];
        let Some(rel) = relative(root, &item.path) else {
            return Ok(None);
        };
        entry_of_node(item.node, rel)
            .map(Some)
            .map_err(|err| err.to_string())
    })
    .map_err(|reason| wire_error(root, reason))
}

/// Pushes what changed (or the whole manifest) and updates `project` on success.
#[expect(
    clippy::too_many_lines,
    reason = "delta and full manifests, the blob round and the digest check read best together"
)]
fn push_project(
    link: &mut Link,
    project: &mut WireProjectState,
    vfs: &Vfs,
    excludes: &[String],
) -> Result<SyncReport, BetaError> {
    let started = Instant::now();
    open_project(link, project, excludes)?;
    let root = project.vfs_root.clone();
    let delta = if in_step(project) {
        match vfs.changes_since(&root, project.acked.unwrap_or_default()) {
            Ok(changes) => Some(changes),
            Err(VfsError::HistoryUnavailable { .. }) => None,
            Err(err) => return Err(wire_error(&root, err.to_string())),
        }
    } else {
        None
    };
    let mut contents: HashMap<String, Content> = HashMap::new();
    let mut counts = Counts::default();
    let mut in_order: Vec<Content> = Vec::new();
    let mut note = |entry: &WireEntry, content: Option<Content>, counts: &mut Counts| {
        counts.add(entry);
        if let (Some(digest), Some(content)) = (&entry.digest, content)
            && let std::collections::hash_map::Entry::Vacant(slot) = contents.entry(digest.clone())
        {
            // Each distinct content once, in order of first appearance: the blobs of a
            // streamed push, in the order the sidecar expects them.
            in_order.push(Content::clone(&content));
            slot.insert(content);
        }
    };
    let (push, next) = if let Some(changes) = delta {
        if changes.is_empty() {
            project.acked = Some(vfs.generation());
            return Ok(counts.report(started));
        }
        let mut next = project.manifest.clone();
        let mut deleted = Vec::new();
        for path in &changes.deleted {
            if let Some(rel) = relative(&root, path) {
                next.remove_subtree(rel);
                deleted.push(rel.to_owned());
                counts.deleted += 1;
            }
        }
        let mut entries = Vec::new();
        for path in &changes.upserted {
            let Some(rel) = relative(&root, path) else {
                continue;
            };
            let (entry, content) =
                entry_of(vfs, path, rel).map_err(|err| wire_error(&root, err.to_string()))?;
            if next.get(rel) == Some(&entry) {
                continue;
            }
            note(&entry, content, &mut counts);
            next.upsert(entry.clone());
            entries.push(entry);
        }
        let push = WirePush {
            session_id: String::new(),
            project: root.clone(),
            full: false,
            base_epoch: Some(project.epoch.clone()),
            base_generation: project.acked,
            epoch: project.epoch.clone(),
            generation: vfs.generation(),
            deleted,
            entries,
            stream: false,
        };
        (push, next)
    } else {
        let mut next = Manifest::default();
        let mut entries = Vec::new();
        let walked: Vec<devshell_vm_vfs::WalkEntry<'_>> = vfs
            .walk(&root)
            .map_err(|err| wire_error(&root, err.to_string()))?
            .collect();
        let stream = link.capabilities()?.wire_sync_stream
            && project.remote.as_ref().is_some_and(|r| r.entries == 0);
        if stream {
            // No digests: the line leaves at once, and each content travels as its own
            // blob while the manifest (with the digests) is built alongside (below).
            for item in &walked {
                let Some(rel) = relative(&root, &item.path) else {
                    continue;
                };
                let (entry, content) = entry_of_node_unhashed(item.node, rel)
                    .map_err(|err| wire_error(&root, err.to_string()))?;
                counts.add(&entry);
                in_order.extend(content);
                entries.push(entry);
            }
        } else {
            for (entry, content) in entries_of(&root, &walked)? {
                note(&entry, content, &mut counts);
                next.upsert(entry.clone());
                entries.push(entry);
            }
        }
        // The epoch changes with every full push: a delta never applies to a copy
        // that a different history produced.
        project.epoch = fresh_epoch();
        let push = WirePush {
            session_id: String::new(),
            project: root.clone(),
            full: true,
            base_epoch: None,
            base_generation: None,
            epoch: project.epoch.clone(),
            generation: vfs.generation(),
            deleted: Vec::new(),
            entries,
            // Into an empty copy every blob is needed: send them at once, without the
            // wire_need round trip (the sidecar writes files as they arrive).
            stream,
        };
        (push, next)
    };
    let generation = push.generation;
    let mut next = next;
    let reply = if push.stream {
        let data: Vec<&[u8]> = in_order.iter().map(|c| &c[..]).collect();
        let contents = &in_order;
        let (reply, manifest) = link.push_streamed(push, &data, move |entries| {
            // The files' contents are in entry order: hash each for its entry. The
            // sidecar hashes what it received; the tree digests are compared below.
            let mut files = contents.iter();
            let mut manifest = Manifest::default();
            for mut entry in entries {
                if entry.kind == WireKind::File
                    && entry.digest.is_none()
                    && let Some(content) = files.next()
                {
                    entry.digest = Some(devshell_vm_protocol::digest_hex(content));
                }
                manifest.upsert(entry);
            }
            // Computed (and cached) here, while the sidecar still works, not after its
            // answer.
            let _ = manifest.tree_digest();
            manifest
        })?;
        next = manifest;
        reply
    } else {
        link.call(|session_id| Request::WirePush(WirePush { session_id, ..push }))?
    };
    let reply = match reply {
        Reply::WireNeed(need) => {
            let mut blobs: Vec<devshell_vm_protocol::BlobRef> = Vec::new();
            let mut data: Vec<Content> = Vec::new();
            for digest in &need.digests {
                let Some(content) = contents.get(digest) else {
                    return Err(wire_error(
                        &root,
                        format!(
                            "the sidecar asked for blob {digest}, which this push does not hold"
                        ),
                    ));
                };
                blobs.push(devshell_vm_protocol::BlobRef {
                    digest: digest.clone(),
                    size: content.len() as u64,
                });
                data.push(Content::clone(content));
            }
            let conn = link.connection()?;
            let session_id = conn.session_id.clone().unwrap_or_default();
            let slices: Vec<&[u8]> = data.iter().map(|c| &c[..]).collect();
            let sent = conn
                .send_with_blobs(
                    &Request::WireBlobs(WireBlobs { session_id, blobs }),
                    &slices,
                )
                .and_then(|()| conn.read_wire_reply("wire_blobs"));
            link.settle_pub(sent)?
        }
        other => other,
    };
    match reply {
        Reply::WirePushOk(ok) => {
            if ok.tree_digest != next.tree_digest() {
                return Err(wire_error(
                    &root,
                    format!(
                        "after the push the sidecar's tree digest is {}, ours {} (the next run sends a full manifest)",
                        ok.tree_digest,
                        next.tree_digest()
                    ),
                ));
            }
            project.manifest = next;
            project.acked = Some(generation);
            if let Some(remote) = project.remote.as_mut() {
                remote.epoch = Some(project.epoch.clone());
                remote.generation = Some(generation);
                remote.tree_digest = ok.tree_digest;
                // A later full push on this connection streams only into an empty copy.
                remote.entries = project.manifest.len() as u64;
            }
            Ok(counts.report(started))
        }
        Reply::Error(err) => Err(remote("wire_push", err)),
        other => Err(link.unexpected("wire_push", &other)),
    }
}

/// Pulls the tool's changes into `vfs`, all or nothing.
#[expect(
    clippy::too_many_lines,
    reason = "receive, resolve, apply to a clone, commit: one exchange, read in order"
)]
fn pull_project(
    link: &mut Link,
    project: &mut WireProjectState,
    vfs: &mut Vfs,
) -> Result<SyncReport, BetaError> {
    let started = Instant::now();
    let root = project.vfs_root.clone();
    let conn = link.connection()?;
    let session_id = conn.session_id.clone().unwrap_or_default();
    let request = Request::WirePull(WirePull {
        session_id: session_id.clone(),
        project: root.clone(),
    });
    // Header and blobs are read as one exchange: any failure drops the connection.
    let received = (|| {
        let reply = conn.request(&request)?;
        let Reply::WireChanges(changes) = reply else {
            return Ok(Err(reply));
        };
        let blobs = conn.read_blobs("wire_pull", &changes.blobs, DEFAULT_MAX_FILE_SIZE)?;
        Ok(Ok((changes, blobs)))
    })();
    let (changes, mut blobs) = match link.settle_pub(received)? {
        Ok(found) => found,
        Err(Reply::Error(err)) => return Err(remote("wire_pull", err)),
        Err(other) => return Err(link.unexpected("wire_pull", &other)),
    };
    let mut counts = Counts::default();
    if changes.entries.is_empty() && changes.deleted.is_empty() {
        return Ok(counts.report(started));
    }
    // Contents not sent: the sidecar assumed we have them; find them in our tree.
    let by_digest: HashMap<&str, &str> = project
        .manifest
        .iter()
        .filter_map(|e| e.digest.as_deref().map(|d| (d, e.path.as_str())))
        .collect();
    let mut wanted: Vec<String> = Vec::new();
    for entry in &changes.entries {
        let Some(digest) = entry.digest.as_deref() else {
            continue;
        };
        if blobs.contains_key(digest) || wanted.iter().any(|w| w == digest) {
            continue;
        }
        let local = by_digest
            .get(digest)
            .and_then(|rel| vfs.read_file(&join(&root, rel)).ok())
            .filter(|content| digest_hex(content) == digest);
        match local {
            Some(content) => {
                blobs.insert(digest.to_owned(), content);
            }
            None => wanted.push(digest.to_owned()),
        }
    }
    if !wanted.is_empty() {
        let conn = link.connection()?;
        let request = Request::WireWant(WireWant {
            session_id: session_id.clone(),
            project: root.clone(),
            digests: wanted,
        });
        let fetched = (|| {
            let reply = conn.request(&request)?;
            let Reply::WireBlobs(header) = reply else {
                return Ok(Err(reply));
            };
            let mut got = Vec::new();
            for blob in &header.blobs {
                let data = conn.read_blob("wire_want", blob, DEFAULT_MAX_FILE_SIZE)?;
                got.push((blob.digest.clone(), data));
            }
            Ok(Ok(got))
        })();
        match link.settle_pub(fetched)? {
            Ok(got) => blobs.extend(got),
            Err(Reply::Error(err)) => return Err(remote("wire_want", err)),
            Err(other) => return Err(link.unexpected("wire_want", &other)),
        }
    }
    // Apply to a clone; the VFS changes only when everything applied.
    let mut next_vfs = vfs.clone();
    let mut next_manifest = project.manifest.clone();
    apply_changes(
        &mut next_vfs,
        &root,
        &mut next_manifest,
        &changes.deleted,
        &changes.entries,
        &blobs,
    )
    .map_err(|err| wire_error(&root, err.to_string()))?;
    let ours = next_manifest.tree_digest();
    if ours != changes.tree_digest {
        return Err(wire_error(
            &root,
            format!(
                "after applying the pull our tree digest is {ours}, the sidecar's {} (the VFS was left unchanged)",
                changes.tree_digest
            ),
        ));
    }
    for entry in &changes.entries {
        match entry.kind {
            WireKind::Dir => counts.dirs += 1,
            WireKind::File | WireKind::Symlink => {
                counts.files += 1;
                counts.bytes += entry.size;
            }
        }
    }
    counts.deleted = changes.deleted.len() as u64;
    *vfs = next_vfs;
    project.manifest = next_manifest;
    let generation = vfs.generation();
    // Commit on the sidecar. If this fails the VFS already holds the pull; the next run
    // compares manifests and sends only what differs.
    let done = link.call(|session_id| {
        Request::WirePullDone(WirePullDone {
            session_id,
            project: root.clone(),
            epoch: project.epoch.clone(),
            generation,
            tree_digest: ours.clone(),
        })
    });
    match done {
        Ok(Reply::WirePullOk(_)) => {
            project.acked = Some(generation);
            if let Some(remote) = project.remote.as_mut() {
                remote.epoch = Some(project.epoch.clone());
                remote.generation = Some(generation);
                remote.tree_digest = ours;
                remote.entries = project.manifest.len() as u64;
            }
        }
        _ => project.forget(),
    }
    Ok(counts.report(started))
}

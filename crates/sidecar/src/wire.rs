//! `wire-sync` on the sidecar: per-client stores of project copies that the client
//! pushes to and pulls from over the connection (see `docs/arch/wire-sync.md`).
//!
//! Each project copy (a [`Replica`]) is an in-memory [`Vfs`] mirror of the client's
//! project plus its staging tree on disk, kept in step by `devshell-vm-sync`
//! (`push_incremental` writes what a push changed, `pull_workspace_to_vfs_scoped` finds
//! what a tool changed). On Linux an inotify [`ChangeTracker`] watches each copy's tree,
//! so a pull lists only the directories that saw events — a run that changed nothing
//! costs no scan at all — and any doubt (lost events, the watch limit) scans in full. So the on-disk side reuses the sync crate's
//! descriptor-based, `O_NOFOLLOW` safety boundary, and the sidecar needs no store of its
//! own beyond the mirror: a digest the mirror's [`Manifest`] lists is a blob it has.
//!
//! Stores live under `<first --root>/.devshell-vm-wire/<store>/<project>/<leaf>`, where
//! `<store>` is derived from the token and the client id (two clients never share one)
//! and `<project>` from the client's project path. A copy survives its connection:
//! the next session of the same client checks it out again (`wire_project` reports its
//! epoch, generation and tree digest, and the client sends only what differs). Copies
//! idle longer than `--wire-idle-secs` are dropped and their directories removed.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use devshell_vm_protocol::{
    BlobRef, ErrorCode, LineReader, Manifest, ProtocolError, Reply, WireBlobs, WireChanges,
    WireEntry, WireKind, WireNeed, WireProjectOk, WirePullDone, WirePullOk, WirePush, WirePushOk,
    WireWant, digest_hex, read_blobs_hashed, write_blob, write_blob_piece, write_frame,
};
use devshell_vm_sync::wire::{
    apply_changes, apply_entry, entries_in_parallel, entry_of_node, entry_of_unread, ns_to_time,
};
use devshell_vm_sync::{PullScope, StreamEntry, StreamedPush, SyncState};
use devshell_vm_vfs::{Content, LazyContent, NodeKind, Vfs};

use crate::conn::log;
use crate::options::Token;

/// Name of the directory under the first `--root` that holds every store.
pub(crate) const WIRE_DIR: &str = ".devshell-vm-wire";

/// Every client store of the sidecar, with the project copies not checked out by a
/// connection.
#[derive(Debug)]
pub(crate) struct WireStores {
    base: PathBuf,
    max_bytes: u64,
    idle: Duration,
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug)]
enum Slot {
    /// Checked out by a connection.
    InUse,
    /// Waiting for its client's next session.
    Idle(Box<Replica>, Instant),
}

impl WireStores {
    /// Stores under `root/.devshell-vm-wire` (created 0700 on first use).
    pub(crate) fn new(root: &Path, max_bytes: u64, idle: Duration) -> Self {
        Self {
            base: root.join(WIRE_DIR),
            max_bytes,
            idle,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The directory holding every store (`session_start` must not reach into it).
    pub(crate) fn base(&self) -> &Path {
        &self.base
    }

    /// The byte bound of one project copy.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The store name for a client: 32 hex digits of a BLAKE3 key derivation over the
    /// token (empty without one) and the client id.
    pub(crate) fn store_name(token: Option<&Token>, client_id: &str) -> String {
        let mut material = Vec::new();
        if let Some(token) = token {
            material.extend_from_slice(token.secret().as_bytes());
        }
        material.push(0);
        material.extend_from_slice(client_id.as_bytes());
        let key = blake3::derive_key("devshell-vm-sidecar wire-sync store v1", &material);
        blake3::Hash::from(key).to_hex()[..32].to_owned()
    }

    /// Creates (0700) and returns the store directory.
    pub(crate) fn open_store(&self, store: &str) -> Result<PathBuf, String> {
        let dir = self.base.join(store);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|err| format!("cannot create the store {}: {err}", dir.display()))?;
        // Touch: the idle sweep at start-up goes by the directory's mtime.
        let _ = filetime_now(&dir);
        Ok(dir)
    }

    /// Checks out the copy of `project` in `store` (a fresh one if there is none).
    pub(crate) fn check_out(
        &self,
        store: &str,
        store_dir: &Path,
        project: &str,
    ) -> Result<Box<Replica>, (ErrorCode, String)> {
        let id = project_id(project);
        let key = format!("{store}/{id}");
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.insert(key.clone(), Slot::InUse) {
            Some(Slot::Idle(replica, _)) => Ok(replica),
            Some(Slot::InUse) => Err((
                ErrorCode::WireBusy,
                format!("project {project:?} is in use by another connection of this client"),
            )),
            None => match Replica::new(store_dir, &id, project) {
                Ok(replica) => Ok(Box::new(replica)),
                Err(message) => {
                    slots.remove(&key);
                    Err((ErrorCode::WireIo, message))
                }
            },
        }
    }

    /// Returns a checked-out copy for the client's next session.
    pub(crate) fn check_in(&self, store: &str, mut replica: Box<Replica>) {
        replica.pending_push = None;
        replica.pending_pull = false;
        let key = format!("{store}/{}", replica.id);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.insert(key, Slot::Idle(replica, Instant::now()));
    }

    /// Drops copies idle longer than the limit and removes their directories; at
    /// start-up (`startup`), also store directories left by an earlier process whose
    /// mtime is older than the limit.
    pub(crate) fn sweep(&self, startup: bool) {
        let expired: Vec<Box<Replica>> = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<String> = slots
                .iter()
                .filter_map(|(key, slot)| match slot {
                    Slot::Idle(_, since) if since.elapsed() >= self.idle => Some(key.clone()),
                    _ => None,
                })
                .collect();
            keys.into_iter()
                .filter_map(|key| match slots.remove(&key) {
                    Some(Slot::Idle(replica, _)) => Some(replica),
                    _ => None,
                })
                .collect()
        };
        for replica in expired {
            eprintln!(
                "devshell-vm-sidecar: wire-sync: removing idle copy {}",
                replica.dir.display()
            );
            let _ = std::fs::remove_dir_all(&replica.dir);
        }
        if startup && let Ok(entries) = std::fs::read_dir(&self.base) {
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age >= self.idle);
                if old {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    /// Starts the idle sweeper thread.
    pub(crate) fn spawn_sweeper(stores: std::sync::Arc<crate::conn::Shared>) {
        let period = (stores.wire.idle / 4).clamp(Duration::from_secs(1), Duration::from_mins(1));
        let spawned = std::thread::Builder::new()
            .name("wire-sweep".into())
            .spawn(move || {
                stores.wire.sweep(true);
                loop {
                    std::thread::sleep(period);
                    stores.wire.sweep(false);
                }
            });
        if let Err(err) = spawned {
            eprintln!("devshell-vm-sidecar: cannot start the wire-sync sweeper: {err}");
        }
    }
}

fn filetime_now(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.set_modified(SystemTime::now())
}

/// `<leaf>-<12 hex digits of BLAKE3(project)>`, the leaf reduced to safe characters.
fn project_id(project: &str) -> String {
    let leaf: String = project
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("root")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    let leaf = if leaf.is_empty() || leaf.starts_with('.') {
        format!("p{leaf}")
    } else {
        leaf
    };
    format!("{leaf}-{}", &digest_hex(project.as_bytes())[..12])
}

/// The directory name of a project's tree inside its copy.
const TREE_LEAF: &str = "tree";

/// The inotify change tracking of a copy's tree (a full scan every pull where there is
/// no inotify).
use devshell_vm_sync::watch::ChangeTracker;

/// A push waiting for its blobs.
#[derive(Debug)]
struct PendingPush {
    push: WirePush,
    deleted: Vec<String>,
    entries: Vec<WireEntry>,
    missing: Vec<String>,
    /// When `wire_need` was answered (the phase timings in the log start here).
    needed_at: Instant,
}

impl PendingPush {
    /// The relative paths of the push's directories.
    fn dirs(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|e| e.kind == WireKind::Dir)
            .map(|e| e.path.as_str())
    }
}

/// The blobs of a streamed push, in the order they arrive, and the entries each fills.
struct StreamPlan {
    blobs: Vec<BlobRef>,
    /// For each blob, the indices of the entries it fills.
    users: Vec<Vec<usize>>,
    /// No file entry has a digest: one blob per file entry, digests computed here.
    digestless: bool,
    /// The first file whose digest is present where the first file's is not (or the
    /// reverse): such a push is refused.
    mixed: Option<String>,
}

impl StreamPlan {
    fn of(entries: &[WireEntry]) -> Self {
        let files = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == WireKind::File);
        let digestless = files
            .clone()
            .next()
            .is_some_and(|(_, e)| e.digest.is_none());
        let mixed = files
            .clone()
            .find(|(_, e)| e.digest.is_none() != digestless)
            .map(|(_, e)| e.path.clone());
        let mut blobs = Vec::new();
        let mut users: Vec<Vec<usize>> = Vec::new();
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (index, entry) in files {
            match entry.digest.as_deref() {
                // Each distinct digest once, in order of first appearance.
                Some(digest) if !digestless => {
                    if let Some(&blob) = first.get(digest) {
                        users[blob].push(index);
                        continue;
                    }
                    first.insert(digest, blobs.len());
                    blobs.push(BlobRef {
                        digest: digest.to_owned(),
                        size: entry.size,
                    });
                }
                // One per file (an empty digest: computed from the bytes).
                None if digestless => blobs.push(BlobRef {
                    digest: String::new(),
                    size: entry.size,
                }),
                // Mixed: refused before any frame is read.
                _ => continue,
            }
            users.push(vec![index]);
        }
        Self {
            blobs,
            users,
            digestless,
            mixed,
        }
    }

    /// Gives the file entries without a digest (in order: one per blob) the digests
    /// the blobs were found to have.
    fn fill_digests(&self, entries: &mut [WireEntry], digests: &[String]) {
        if !self.digestless {
            return;
        }
        let files = entries
            .iter_mut()
            .filter(|e| e.kind == WireKind::File && e.digest.is_none());
        for (entry, digest) in files.zip(digests) {
            entry.digest = Some(digest.clone());
        }
    }
}

/// One project's copy: mirror, manifest, staging tree and sync state.
pub(crate) struct Replica {
    project: String,
    id: String,
    /// `<store>/<id>`: the sync state's staging dir; the tree is `<dir>/tree`.
    dir: PathBuf,
    vfs: Vfs,
    sync: SyncState,
    /// Which directories of the tree changed since the last pull or check.
    tracker: ChangeTracker,
    manifest: Manifest,
    epoch: Option<String>,
    generation: Option<u64>,
    pending_push: Option<PendingPush>,
    pending_pull: bool,
    /// A pull's scan failed: the tree on disk holds changes that mirror and manifest
    /// do not (the tracker still has them). The next push takes them in first.
    behind: bool,
    /// A pull's absorb failed (an output changed while it was hashed): the mirror's
    /// changes since this generation are not all in the manifest. The next absorb
    /// starts from here, so nothing the tool did is lost.
    unabsorbed: Option<u64>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("project", &self.project)
            .field("dir", &self.dir)
            .field("entries", &self.manifest.len())
            .field("epoch", &self.epoch)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

const VFS_ROOT: &str = "/tree";

impl Replica {
    fn new(store_dir: &Path, id: &str, project: &str) -> Result<Self, String> {
        let dir = store_dir.join(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join(TREE_LEAF))
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        let mut vfs = Vfs::new();
        vfs.mkdir(VFS_ROOT)
            .map_err(|err| format!("cannot create the mirror root: {err}"))?;
        Ok(Self {
            project: project.to_owned(),
            id: id.to_owned(),
            sync: SyncState::new(&dir),
            tracker: ChangeTracker::new(),
            dir,
            vfs,
            manifest: Manifest::default(),
            epoch: None,
            generation: None,
            pending_push: None,
            pending_pull: false,
            behind: false,
            unabsorbed: None,
        })
    }

    /// `true` while a push waits for its blobs.
    pub(crate) fn has_pending_push(&self) -> bool {
        self.pending_push.is_some()
    }

    /// Sets the pull excludes the client asked for.
    pub(crate) fn set_excludes(&mut self, globs: &[String]) -> Result<(), String> {
        let globs: Vec<&str> = globs.iter().map(String::as_str).collect();
        self.sync
            .set_excludes(&globs)
            .map_err(|err| err.to_string())
    }

    /// The project as the client named it.
    pub(crate) fn project(&self) -> &str {
        &self.project
    }

    /// `wire_project_ok` for this copy; `mount` is the session's guest mount.
    pub(crate) fn describe(&self, mount: &str) -> WireProjectOk {
        let base = if mount == "/" { "" } else { mount };
        WireProjectOk {
            project: self.project.clone(),
            guest_dir: format!("{base}/{}/{TREE_LEAF}", self.id),
            epoch: self.epoch.clone(),
            generation: self.generation,
            tree_digest: self.manifest.tree_digest(),
            entries: self.manifest.len() as u64,
        }
    }

    /// Forgets everything (after a failure that may have left disk and mirror apart):
    /// the next push is a full one and every blob travels again.
    fn reset(&mut self, conn: u64, why: &str) {
        log(
            conn,
            &format!("wire-sync: resetting the copy of {:?}: {why}", self.project),
        );
        let _ = std::fs::remove_dir_all(self.dir.join(TREE_LEAF));
        let _ = std::fs::create_dir_all(self.dir.join(TREE_LEAF));
        let mut vfs = Vfs::new();
        let _ = vfs.mkdir(VFS_ROOT);
        self.vfs = vfs;
        let excludes: Vec<String> = self.sync.excludes().to_vec();
        self.sync = SyncState::new(&self.dir);
        // A fresh tracker: the tree was recreated, the next pull scans it in full.
        self.tracker = ChangeTracker::new();
        let globs: Vec<&str> = excludes.iter().map(String::as_str).collect();
        let _ = self.sync.set_excludes(&globs);
        self.manifest = Manifest::default();
        self.epoch = None;
        self.generation = None;
        self.pending_push = None;
        self.pending_pull = false;
        self.behind = false;
        self.unabsorbed = None;
    }

    /// The reply message for a failure writing the copy's tree: `{doing} <tree> failed:
    /// <causes>`.
    fn disk_failure(&self, doing: &str, err: &devshell_vm_sync::VmSyncError) -> String {
        format!(
            "{doing} {} failed: {}",
            self.dir.join(TREE_LEAF).display(),
            chain(err)
        )
    }

    /// Handles `wire_push`: either applies it at once (nothing missing) or answers
    /// `wire_need` and keeps it pending.
    pub(crate) fn push(&mut self, conn: u64, push: WirePush, max_bytes: u64) -> Reply {
        let pending = match self.check_push(conn, push, max_bytes) {
            Ok(pending) => pending,
            Err(refusal) => return refusal,
        };
        if pending.missing.is_empty() {
            return self.apply_push(conn, &pending, HashMap::new());
        }
        let digests = pending.missing.clone();
        self.pending_push = Some(pending);
        Reply::WireNeed(WireNeed { digests })
    }

    /// Validates a push and plans it: what to delete, which entries change, which
    /// blobs are missing. `Err` is the refusal to answer.
    fn check_push(
        &mut self,
        conn: u64,
        mut push: WirePush,
        max_bytes: u64,
    ) -> Result<PendingPush, Reply> {
        let started = Instant::now();
        self.pending_pull = false;
        self.pending_push = None;
        if std::mem::take(&mut self.behind) {
            // Plans compare with the manifest: first make it describe the disk again.
            self.verify(conn);
        }
        let check = if push.stream {
            WireEntry::validate_streamed
        } else {
            WireEntry::validate
        };
        for entry in &push.entries {
            if let Err(message) = check(entry) {
                return Err(Reply::error(ErrorCode::WireInvalid, message));
            }
        }
        for path in &push.deleted {
            if let Err(message) = devshell_vm_protocol::check_relative_path(path) {
                return Err(Reply::error(ErrorCode::WireInvalid, message));
            }
        }
        // Bound: the copy's file bytes after the push. A full push lists the whole copy;
        // a delta is played on a scratch copy of the manifest (below).
        let full_bytes = push
            .entries
            .iter()
            .filter(|e| e.kind == devshell_vm_protocol::WireKind::File)
            .map(|e| e.size)
            .fold(0, u64::saturating_add);
        // The lists move out of the request (thousands of entries on a first push).
        let (deleted, entries) = if push.full {
            self.plan_full(std::mem::take(&mut push.entries))
        } else {
            if push.base_epoch.is_none()
                || push.base_epoch != self.epoch
                || push.base_generation != self.generation
            {
                return Err(Reply::error(
                    ErrorCode::WireStale,
                    format!(
                        "delta push on {:?}/{:?} but this copy is at {:?}/{:?}: send a full push",
                        push.base_epoch, push.base_generation, self.epoch, self.generation
                    ),
                ));
            }
            (
                std::mem::take(&mut push.deleted),
                std::mem::take(&mut push.entries),
            )
        };
        let bytes = if push.full {
            full_bytes
        } else {
            let mut after = self.manifest.clone();
            for path in &deleted {
                after.remove_subtree(path);
            }
            for entry in &entries {
                after.upsert(entry.clone());
            }
            after.file_bytes()
        };
        if bytes > max_bytes {
            return Err(Reply::error(
                ErrorCode::WireQuota,
                format!(
                    "the copy of {:?} would hold {bytes} bytes of files, over the sidecar's bound of {max_bytes} (--wire-max-bytes)",
                    self.project
                ),
            ));
        }
        let missing = self.missing_blobs(&entries);
        let missing_count = missing.len();
        let pending = PendingPush {
            push,
            deleted,
            entries,
            missing,
            needed_at: Instant::now(),
        };
        log(
            conn,
            &format!(
                "wire-sync: push of {:?} checked: {} entries, {missing_count} blobs needed ({:?})",
                self.project,
                pending.entries.len(),
                started.elapsed()
            ),
        );
        Ok(pending)
    }

    /// Drops the mirror's change log when the staging tree is in step with the mirror:
    /// the sync state then asks only about later generations, and the clone a delta
    /// push applies to copies no history (a mirror built by a first push of 10,000
    /// files would carry 10,000 log entries into every clone).
    fn trim_mirror_history(&mut self) {
        if self.unabsorbed.is_none()
            && self.sync.synced_generation(VFS_ROOT) == Some(self.vfs.generation())
        {
            self.vfs.forget_history();
        }
    }

    /// The distinct digests of `entries` that the copy does not hold.
    fn missing_blobs(&self, entries: &[WireEntry]) -> Vec<String> {
        let have: HashSet<&str> = self
            .manifest
            .iter()
            .filter_map(|e| e.digest.as_deref())
            .collect();
        let mut missing: Vec<String> = Vec::new();
        let mut asked: HashSet<&str> = HashSet::new();
        for entry in entries {
            if let Some(digest) = entry.digest.as_deref()
                && !have.contains(digest)
                && asked.insert(digest)
            {
                missing.push(digest.to_owned());
            }
        }
        missing
    }

    /// Handles a streamed `wire_push` (`stream: true`): the bulk frames of every
    /// distinct file digest follow the line at once, or, when the entries carry no
    /// digests, one per file (their digests are computed here). Into an empty copy the files are
    /// written while they arrive ([`devshell_vm_sync::StreamedPush`]); otherwise they
    /// are read, then applied like any push. A refusal before the frames were read, a
    /// bad frame or digest close the connection (`Err`) after the error reply; any
    /// failure after writing began resets the copy.
    pub(crate) fn push_streamed<R: Read, W: Write>(
        &mut self,
        conn: u64,
        push: WirePush,
        reader: &mut LineReader<R>,
        writer: &mut W,
        max_bytes: u64,
    ) -> Result<(), ProtocolError> {
        let plan = StreamPlan::of(&push.entries);
        let refusal = if !push.full {
            Err((
                ErrorCode::WireInvalid,
                "a streamed wire_push must be full".to_owned(),
            ))
        } else if let Some(path) = &plan.mixed {
            Err((
                ErrorCode::WireInvalid,
                format!(
                    "a streamed wire_push gives every file's digest or none: {path:?} differs from the first file"
                ),
            ))
        } else {
            self.check_push(conn, push, max_bytes)
                .map_err(|reply| match reply {
                    Reply::Error(err) => (err.code, err.message),
                    other => (ErrorCode::WireInvalid, format!("unexpected {}", other.op())),
                })
        };
        let mut pending = match refusal {
            Ok(pending) => pending,
            Err((code, message)) => {
                // Its frames follow and cannot be skipped without trusting the entries
                // just refused: the connection ends here.
                log(
                    conn,
                    &format!("wire-sync: closing: streamed push refused: {message}"),
                );
                write_frame(writer, &Reply::error(code, message.clone()))?;
                return Err(ProtocolError::BulkFrame { message });
            }
        };
        let fresh = self.manifest.is_empty() && pending.deleted.is_empty();
        let reply = if fresh {
            self.push_fresh(conn, &mut pending, &plan, reader, writer, max_bytes)?
        } else {
            match self.read_stream(conn, &plan.blobs, reader, max_bytes, true, |_| {}) {
                Ok((received, digests)) => {
                    plan.fill_digests(&mut pending.entries, &digests);
                    self.apply_push(conn, &pending, received)
                }
                Err(err) => self.refuse_stream(conn, writer, err)?,
            }
        };
        write_frame(writer, &reply)
    }

    /// Reads and verifies the frames of `blobs`; `verified` sees each verified batch
    /// (blob index, content) on the verifying thread. A bad frame or digest is an `Err`
    /// the caller passes to [`Self::refuse_stream`] once its writers stopped.
    fn read_stream<R: Read>(
        &self,
        conn: u64,
        blobs: &[BlobRef],
        reader: &mut LineReader<R>,
        max_bytes: u64,
        keep: bool,
        verified: impl FnMut(Vec<Verified>) + Send,
    ) -> Result<(HashMap<String, Content>, Vec<String>), ProtocolError> {
        let started = Instant::now();
        let (received, digests, total) = read_verified(reader, blobs, max_bytes, keep, verified)?;
        log(
            conn,
            &format!(
                "wire-sync: push of {:?}: received {} streamed blobs, {total} bytes (frames read and verified in {:?})",
                self.project,
                blobs.len(),
                started.elapsed()
            ),
        );
        Ok((received, digests))
    }

    /// Ends a streamed push whose frames failed: resets the copy, then answers (so a
    /// client that reconnects at once finds the copy empty) and ends the connection.
    /// The caller has stopped every thread that wrote into the copy.
    fn refuse_stream<W: Write>(
        &mut self,
        conn: u64,
        writer: &mut W,
        err: ProtocolError,
    ) -> Result<Reply, ProtocolError> {
        self.reset(conn, &format!("streamed push failed: {err}"));
        log(conn, &format!("wire-sync: closing: {err}"));
        write_frame(writer, &Reply::error(err.error_code(), err.to_string()))?;
        Err(err)
    }

    /// A streamed push into an empty copy: directories first, then each file written
    /// as soon as its blob is verified, the mirror built meanwhile.
    fn push_fresh<R: Read, W: Write>(
        &mut self,
        conn: u64,
        pending: &mut PendingPush,
        plan: &StreamPlan,
        reader: &mut LineReader<R>,
        writer: &mut W,
        max_bytes: u64,
    ) -> Result<Reply, ProtocolError> {
        let started = Instant::now();
        let blobs = &plan.blobs;
        let stream_entries: Vec<StreamEntry<'_>> =
            pending.entries.iter().map(stream_entry).collect();
        self.tracker.before_push();
        let streamed = match StreamedPush::begin(&mut self.sync, VFS_ROOT, &stream_entries) {
            Ok(streamed) => streamed,
            Err(err) => {
                let message = self.disk_failure("creating the tree of the push in", &err);
                // The frames that follow are read (and dropped) so the connection stays.
                if let Err(err) = self.read_stream(conn, blobs, reader, max_bytes, true, |_| {}) {
                    return self.refuse_stream(conn, writer, err);
                }
                self.reset(conn, &message);
                return Ok(Reply::error(ErrorCode::WireIo, message));
            }
        };
        drop(stream_entries);
        let Some(streamed) = streamed else {
            return match self.read_stream(conn, blobs, reader, max_bytes, true, |_| {}) {
                Ok((received, digests)) => {
                    plan.fill_digests(&mut pending.entries, &digests);
                    Ok(self.apply_push(conn, pending, received))
                }
                Err(err) => self.refuse_stream(conn, writer, err),
            };
        };
        let begun = started.elapsed();
        // The mirror, its manifest and tree digest are built on their own thread while
        // the blobs arrive: structure first (it needs no content), then each file as its
        // blob is verified.
        let (to_mirror, mirror_rx) = std::sync::mpsc::sync_channel::<Vec<Verified>>(16);
        let base = self.vfs.clone();
        let entries = &pending.entries;
        // Large files the writers are done with: the builder lets the mirror hold their
        // descriptors instead of the bytes as it goes, so their received bytes are freed
        // during the push, not at its end (small files stay in the mirror's memory).
        let (kept_tx, kept_rx) = std::sync::mpsc::channel();
        streamed.send_kept_to(kept_tx);
        let (received, mirror) = std::thread::scope(|scope| {
            let builder = scope.spawn(move || build_mirror(base, entries, &mirror_rx, &kept_rx));
            let feed = |batch: Vec<Verified>| {
                let mut out = Vec::with_capacity(batch.len());
                for (blob, content, digest) in batch {
                    for &index in &plan.users[blob] {
                        out.push((index, Content::clone(&content), digest.clone()));
                    }
                }
                let to_write = out
                    .iter()
                    .map(|(i, c, _)| (*i, Content::clone(c)))
                    .collect();
                // A stopped builder reports its error below.
                let _ = to_mirror.send(out);
                // A failed writer reports its error at finish.
                let _ = streamed.feed(to_write);
            };
            let received = self.read_stream(conn, blobs, reader, max_bytes, false, feed);
            drop(to_mirror);
            let mirror = builder
                .join()
                .unwrap_or_else(|_| Err("the mirror builder panicked".to_owned()));
            (received, mirror)
        });
        if let Err(err) = received {
            // Stop the writers first: the copy is reset, then the client answered.
            drop(streamed);
            return self.refuse_stream(conn, writer, err);
        }
        let received_at = started.elapsed();
        let (mut next, manifest, tree_digest) = match mirror {
            Ok(built) => built,
            Err(message) => {
                drop(streamed);
                self.reset(conn, &message);
                return Ok(Reply::error(ErrorCode::WireInvalid, message));
            }
        };
        let mirror_at = started.elapsed();
        let kept_count = match self.finish_stream(conn, streamed, &mut next) {
            Ok(kept) => kept,
            Err(reply) => return Ok(reply),
        };
        let finished_at = started.elapsed();
        // Watches go on the directories the push created (no listing of the tree).
        self.tracker
            .after_fresh_push(&self.dir.join(TREE_LEAF), pending.dirs());
        self.vfs = next;
        self.manifest = manifest;
        self.epoch = Some(pending.push.epoch.clone());
        self.generation = Some(pending.push.generation);
        log(
            conn,
            &format!(
                "wire-sync: push of {:?} applied, streamed{} ({} entries, {kept_count} kept on disk, {:?}: tree created {begun:?}, blobs read {received_at:?}, mirror {mirror_at:?}, files done {finished_at:?}, after the line {:?})",
                self.project,
                if plan.digestless {
                    ", digests computed here"
                } else {
                    ""
                },
                pending.entries.len(),
                started.elapsed(),
                pending.needed_at.elapsed(),
            ),
        );
        Ok(Reply::WirePushOk(WirePushOk {
            generation: pending.push.generation,
            tree_digest,
        }))
    }

    /// Finishes a streamed push whose mirror is `next`; the large files it wrote then
    /// hold their bytes on disk, not in the mirror, so the copy's memory is its small
    /// files (the received buffers are freed here). Returns how many were kept on disk.
    fn finish_stream(
        &mut self,
        conn: u64,
        streamed: StreamedPush,
        next: &mut Vfs,
    ) -> Result<usize, Reply> {
        let kept = match streamed.finish(&mut self.sync, next) {
            Ok((_, kept)) => kept,
            Err(err) => {
                let message = self.disk_failure("writing the push into", &err);
                self.reset(conn, &message);
                return Err(Reply::error(ErrorCode::WireIo, message));
            }
        };
        let count = kept.len();
        for (path, content) in kept {
            // Cannot fail (the mirror holds every file pushed, at its length); a file
            // that did would just stay in memory.
            let _ = next.keep_on_disk(&path, content);
        }
        Ok(count)
    }

    /// Deletions and changed entries that turn the copy into exactly `entries`.
    fn plan_full(&self, entries: Vec<WireEntry>) -> (Vec<String>, Vec<WireEntry>) {
        if self.manifest.is_empty() {
            // A first push: nothing to delete, nothing to compare.
            return (Vec::new(), entries);
        }
        let wanted: HashMap<&str, &WireEntry> =
            entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut deleted: Vec<String> = Vec::new();
        for entry in self.manifest.iter() {
            let keep = wanted
                .get(entry.path.as_str())
                .is_some_and(|new| new.kind == entry.kind);
            if keep {
                continue;
            }
            // Only subtree roots: skip a path whose parent is already deleted.
            let under_deleted = deleted.last().is_some_and(|d| {
                entry.path.starts_with(d.as_str()) && entry.path[d.len()..].starts_with('/')
            });
            if !under_deleted {
                deleted.push(entry.path.clone());
            }
        }
        drop(wanted);
        let changed = entries
            .into_iter()
            .filter(|e| self.manifest.get(&e.path) != Some(e))
            .collect();
        (deleted, changed)
    }

    /// Handles `wire_blobs`: reads every announced blob (verifying each digest), then
    /// applies the pending push. A bad frame or digest is fatal for the connection
    /// (`Err`), after the error reply was written.
    pub(crate) fn receive_blobs<R: Read, W: Write>(
        &mut self,
        conn: u64,
        header: &WireBlobs,
        reader: &mut LineReader<R>,
        writer: &mut W,
        max_bytes: u64,
    ) -> Result<(), ProtocolError> {
        let pending = self.pending_push.take();
        // Bound what will be read before reading any of it: only blobs the pending push
        // needs, each once, within the copy's byte bound. Frames cannot be skipped
        // unread, so a refusal here closes the connection.
        let announced: u64 = header
            .blobs
            .iter()
            .map(|b| b.size)
            .fold(0, u64::saturating_add);
        let needed: HashSet<&str> = pending
            .as_ref()
            .map(|p| p.missing.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let mut seen: HashSet<&str> = HashSet::new();
        let unexpected = header
            .blobs
            .iter()
            .find(|b| !needed.contains(b.digest.as_str()) || !seen.insert(b.digest.as_str()));
        let refusal = if announced > max_bytes {
            Some((
                ErrorCode::WireQuota,
                format!("wire_blobs announces {announced} bytes, over the bound of {max_bytes}"),
            ))
        } else {
            unexpected.filter(|_| pending.is_some()).map(|blob| {
                (
                    ErrorCode::WireInvalid,
                    format!(
                        "wire_blobs announces blob {} that the push did not need (or twice)",
                        blob.digest
                    ),
                )
            })
        };
        if let Some((code, message)) = refusal {
            log(conn, &format!("wire-sync: closing: {message}"));
            write_frame(writer, &Reply::error(code, message.clone()))?;
            return Err(ProtocolError::BulkFrame { message });
        }
        let header_at = Instant::now();
        let (received, _, total) =
            match read_verified(reader, &header.blobs, max_bytes, true, |_| {}) {
                Ok(found) => found,
                Err(err) => {
                    log(conn, &format!("wire-sync: closing: {err}"));
                    write_frame(writer, &Reply::error(err.error_code(), err.to_string()))?;
                    return Err(err);
                }
            };
        let Some(pending) = pending else {
            return write_frame(
                writer,
                &Reply::error(
                    ErrorCode::WireSequence,
                    "wire_blobs without a push waiting for blobs (the blobs were read and dropped)",
                ),
            );
        };
        if let Some(absent) = pending.missing.iter().find(|d| !received.contains_key(*d)) {
            return write_frame(
                writer,
                &Reply::error(
                    ErrorCode::WireInvalid,
                    format!("wire_blobs lacks the needed blob {absent}; the push was dropped"),
                ),
            );
        }
        log(
            conn,
            &format!(
                "wire-sync: push of {:?}: received {} blobs, {total} bytes (header {:?} after wire_need, frames read and verified in {:?})",
                self.project,
                header.blobs.len(),
                header_at.duration_since(pending.needed_at),
                header_at.elapsed()
            ),
        );
        let reply = self.apply_push(conn, &pending, received);
        write_frame(writer, &reply)
    }

    /// Applies a push whose blobs are all here: first to a copy of the mirror (so a bad
    /// entry changes nothing), then to disk through the sync crate.
    fn apply_push(
        &mut self,
        conn: u64,
        pending: &PendingPush,
        received: HashMap<String, Content>,
    ) -> Reply {
        let started = Instant::now();
        // Contents the push did not carry come from the mirror, looked up before any
        // deletion (a rename deletes the source path). The index over the manifest is
        // built only when some content is not among the received ones.
        let mut contents = received;
        let mut by_digest: Option<HashMap<String, String>> = None;
        for entry in &pending.entries {
            let Some(digest) = entry.digest.as_deref() else {
                continue;
            };
            if contents.contains_key(digest) {
                continue;
            }
            let content = {
                let by_digest = by_digest.get_or_insert_with(|| {
                    self.manifest
                        .iter()
                        .filter_map(|e| e.digest.clone().map(|d| (d, e.path.clone())))
                        .collect()
                });
                let Some(path) = by_digest.get(digest) else {
                    return Reply::error(
                        ErrorCode::WireInvalid,
                        format!("no content for digest {digest}"),
                    );
                };
                match self.vfs.read_file(&mirror_path(path)) {
                    Ok(content) if digest_hex(&content) == digest => content,
                    // The mirror lost or changed what its manifest lists: start over.
                    _ => {
                        self.reset(conn, &format!("blob {digest} listed but lost"));
                        return Reply::error(
                            ErrorCode::WireStale,
                            format!(
                                "the sidecar lost blob {digest} it had claimed; its copy was reset: send a full push"
                            ),
                        );
                    }
                }
            };
            contents.insert(digest.to_owned(), content);
        }
        let mirror_started = Instant::now();
        self.trim_mirror_history();
        let mut next = self.vfs.clone();
        let mut manifest = self.manifest.clone();
        if let Err(err) = apply_changes(
            &mut next,
            VFS_ROOT,
            &mut manifest,
            &pending.deleted,
            &pending.entries,
            &contents,
        ) {
            return Reply::error(ErrorCode::WireInvalid, err.to_string());
        }
        self.vfs = next;
        self.manifest = manifest;
        let mirror_time = mirror_started.elapsed();
        let disk_started = Instant::now();
        self.tracker.before_push();
        let pushed = devshell_vm_sync::push_incremental(&self.vfs, VFS_ROOT, &mut self.sync);
        if let Ok(report) = &pushed {
            // Its own writes are not the tool's: the tracker drops their events.
            self.tracker
                .after_push(&self.dir.join(TREE_LEAF), !report.is_noop());
        }
        if let Err(err) = pushed {
            let message = self.disk_failure("writing the push into", &err);
            self.reset(conn, &message);
            return Reply::error(ErrorCode::WireIo, message);
        }
        let disk_time = disk_started.elapsed();
        self.epoch = Some(pending.push.epoch.clone());
        self.generation = Some(pending.push.generation);
        let digest_started = Instant::now();
        let tree_digest = self.manifest.tree_digest();
        log(
            conn,
            &format!(
                "wire-sync: push of {:?} applied ({} deleted, {} entries, {:?}: mirror {mirror_time:?}, disk {disk_time:?}, tree digest {:?})",
                self.project,
                pending.deleted.len(),
                pending.entries.len(),
                started.elapsed(),
                digest_started.elapsed()
            ),
        );
        Reply::WirePushOk(WirePushOk {
            generation: pending.push.generation,
            tree_digest,
        })
    }

    /// After a pull that failed on the copy's own tree: the tree stays (a tool's file
    /// changing or unreadable for a moment must not cost the whole copy). The client
    /// cannot send a delta any more, and its full push first takes in what the tree
    /// holds (`behind`).
    fn keep_after_failed_pull(&mut self, conn: u64, message: &str) {
        log(
            conn,
            &format!(
                "wire-sync: pull failed, copy kept ({:?}): {message}",
                self.project
            ),
        );
        self.epoch = None;
        self.generation = None;
        self.behind = true;
    }

    /// Handles `wire_pull`: scans staging, updates mirror and manifest, and writes
    /// `wire_changes` plus the bulk frames of every content the client cannot have.
    pub(crate) fn pull<W: Write>(
        &mut self,
        conn: u64,
        writer: &mut W,
        max_bytes: u64,
    ) -> Result<(), ProtocolError> {
        self.pending_push = None;
        let started = Instant::now();
        let before = self.vfs.generation();
        let scanned = match self.scan() {
            Ok(scanned) => scanned,
            Err(err) => {
                let message = format!(
                    "scanning {} failed: {}",
                    self.dir.join(TREE_LEAF).display(),
                    chain(&err)
                );
                // Mirror and manifest are as before the scan (it is all or nothing) and
                // the tracker keeps what it saw.
                self.keep_after_failed_pull(conn, &message);
                return write_frame(writer, &Reply::error(ErrorCode::WireIo, message));
            }
        };
        let scanned_at = started.elapsed();
        let since = self.unabsorbed.unwrap_or(before);
        let changes = match self.vfs.changes_since(VFS_ROOT, since) {
            Ok(changes) => changes,
            Err(err) => {
                let message = format!("reading the mirror's changes failed: {err}");
                self.reset(conn, &message);
                return write_frame(writer, &Reply::error(ErrorCode::WireIo, message));
            }
        };
        // The digests the copy held before the pull (the client holds them too). Only
        // gathered when something changed: a no-op pull does no O(tree) work.
        let had: HashSet<String> = if changes.is_empty() {
            HashSet::new()
        } else {
            self.manifest
                .iter()
                .filter_map(|e| e.digest.clone())
                .collect()
        };
        let (deleted, upserted) = match self.absorb(&changes) {
            Ok(found) => found,
            Err(message) => {
                // An output changed or vanished while it was hashed (a process the tool
                // left behind): the mirror has the scan, the manifest not all of it;
                // absorbed again, from `since`, before the next push plans.
                self.unabsorbed = Some(since);
                self.keep_after_failed_pull(conn, &message);
                return write_frame(writer, &Reply::error(ErrorCode::WireIo, message));
            }
        };
        self.unabsorbed = None;
        let mut entries = Vec::new();
        let mut blobs: Vec<(BlobRef, Body)> = Vec::new();
        let mut sent: HashSet<String> = HashSet::new();
        for (entry, content) in upserted {
            if let (Some(digest), Some(content)) = (&entry.digest, content)
                && !had.contains(digest)
                && sent.insert(digest.clone())
            {
                blobs.push((
                    BlobRef {
                        digest: digest.clone(),
                        size: entry.size,
                    },
                    content,
                ));
            }
            entries.push(entry);
        }
        let bytes = self.manifest.file_bytes();
        if bytes > max_bytes {
            let message = format!(
                "the tool left {bytes} bytes of files in {:?}, over the sidecar's bound of {max_bytes} (--wire-max-bytes); its copy was reset",
                self.project
            );
            self.reset(conn, &message);
            return write_frame(writer, &Reply::error(ErrorCode::WireQuota, message));
        }
        self.pending_pull = !(entries.is_empty() && deleted.is_empty());
        let wire_bytes: u64 = blobs.iter().map(|(b, _)| b.size).sum();
        let on_disk = blobs
            .iter()
            .filter(|(_, body)| matches!(body, Body::OnDisk(_)))
            .count();
        log(
            conn,
            &format!(
                "wire-sync: pull of {:?} ({scanned}): {} deleted, {} entries, {} blobs ({wire_bytes} bytes, {on_disk} sent from disk; scanned in {scanned_at:?}, hashed by {:?})",
                self.project,
                deleted.len(),
                entries.len(),
                blobs.len(),
                started.elapsed()
            ),
        );
        let header = Reply::WireChanges(Box::new(WireChanges {
            project: self.project.clone(),
            deleted,
            entries,
            blobs: blobs.iter().map(|(b, _)| b.clone()).collect(),
            tree_digest: self.manifest.tree_digest(),
        }));
        let sent = write_with_bodies(writer, &header, blobs.iter().map(|(_, body)| body));
        if let Err(ProtocolError::BulkFrame { message }) = &sent {
            // An output changed on disk after it was hashed (a process the tool left
            // behind): the manifest holds a digest the file no longer has. The client
            // sees a broken blob and keeps its VFS; the copy is rescanned before the
            // next push uses it.
            self.keep_after_failed_pull(conn, message);
        }
        sent
    }

    /// Brings the mirror up to date with the tree on disk: only the directories the
    /// tracker saw change (none: nothing to do), or everything when it has any doubt or
    /// no watch yet (a new copy, a reset, a tree an earlier process left).
    /// Returns what was scanned, for the log: `no scan`, `N directories` or `full scan`.
    fn scan(&mut self) -> Result<String, devshell_vm_sync::VmSyncError> {
        let scope = self.tracker.pull_scope();
        if matches!(&scope, PullScope::Dirs(dirs) if dirs.is_empty()) {
            self.tracker.after_pull(true);
            return Ok("no scan: nothing changed".to_owned());
        }
        let pulled = devshell_vm_sync::pull_workspace_to_vfs_scoped(
            &mut self.sync,
            VFS_ROOT,
            &mut self.vfs,
            &scope,
        );
        self.tracker.after_pull(pulled.is_ok());
        pulled.map(|report| {
            if report.full_scan {
                "full scan".to_owned()
            } else {
                format!("{} directories scanned", report.dirs_scanned)
            }
        })
    }

    /// Applies mirror `changes` to the manifest; returns the deleted relative paths and
    /// the upserted entries with their contents. A large output the scan left unread on
    /// disk is hashed piece by piece from its file and stays unread (see [`Body`]).
    #[allow(clippy::type_complexity)]
    fn absorb(
        &mut self,
        changes: &devshell_vm_vfs::Changes,
    ) -> Result<(Vec<String>, Vec<(WireEntry, Option<Body>)>), String> {
        let mut deleted = Vec::new();
        for path in &changes.deleted {
            if let Some(rel) = relative(path) {
                self.manifest.remove_subtree(rel);
                deleted.push(rel.to_owned());
            }
        }
        let paths: Vec<(&str, &str)> = changes
            .upserted
            .iter()
            .filter_map(|path| relative(path).map(|rel| (path.as_str(), rel)))
            .collect();
        // Each file to the next free thread: a tool's outputs can be large (rlibs).
        let vfs = &self.vfs;
        let upserted = entries_in_parallel(paths.len(), 1, |index| {
            let (path, rel) = paths[index];
            let failed = |err: devshell_vm_vfs::VfsError| {
                format!("reading the mirror at {path} failed: {err}")
            };
            let node = vfs.node(path).map_err(failed)?;
            if let Some((entry, unread)) = entry_of_unread(node, rel).map_err(failed)? {
                return Ok(Some((entry, Some(Body::OnDisk(unread)))));
            }
            entry_of_node(node, rel)
                .map(|(entry, content)| Some((entry, content.map(Body::Bytes))))
                .map_err(failed)
        })?;
        for (entry, _) in &upserted {
            self.manifest.upsert(entry.clone());
        }
        Ok((deleted, upserted))
    }

    /// Compares the staging tree on disk with the mirror (a metadata scan of what the
    /// watch saw change while the copy was idle, or of everything) and takes in
    /// whatever changed behind the sidecar's back — a file lost or altered on disk, or,
    /// for a copy created by this process over a tree an earlier process left, the whole
    /// tree. The tree digest then differs from the client's, so the client sends a full
    /// manifest and every content the copy lost travels again.
    pub(crate) fn verify(&mut self, conn: u64) {
        let since = self.unabsorbed.unwrap_or_else(|| self.vfs.generation());
        let scanned = self.scan().map_err(|err| err.to_string()).and_then(|_| {
            self.vfs
                .changes_since(VFS_ROOT, since)
                .map_err(|err| err.to_string())
        });
        let changes = match scanned {
            Ok(changes) => changes,
            Err(message) => {
                self.reset(
                    conn,
                    &format!("verifying the staging tree failed: {message}"),
                );
                return;
            }
        };
        if changes.is_empty() {
            self.unabsorbed = None;
            return;
        }
        match self.absorb(&changes) {
            Ok(_) if self.unabsorbed.take().is_some() => log(
                conn,
                &format!(
                    "wire-sync: the changes a failed pull left in the copy of {:?} were taken in; the client will resynchronise",
                    self.project
                ),
            ),
            Ok((deleted, upserted)) if deleted.is_empty() && upserted.is_empty() => {}
            Ok((deleted, upserted)) => log(
                conn,
                &format!(
                    "wire-sync: the staging tree of {:?} changed behind the sidecar's back ({} deleted, {} changed); the client will resynchronise",
                    self.project,
                    deleted.len(),
                    upserted.len()
                ),
            ),
            Err(message) => self.reset(conn, &message),
        }
    }

    /// Handles `wire_want`: sends the asked contents from the mirror.
    pub(crate) fn want<W: Write>(
        &self,
        want: &WireWant,
        writer: &mut W,
    ) -> Result<(), ProtocolError> {
        let by_digest: HashMap<&str, &str> = self
            .manifest
            .iter()
            .filter_map(|e| e.digest.as_deref().map(|d| (d, e.path.as_str())))
            .collect();
        let mut blobs: Vec<(BlobRef, Body)> = Vec::new();
        for digest in &want.digests {
            let content = by_digest
                .get(digest.as_str())
                .and_then(|path| self.vfs.read_file(&mirror_path(path)).ok())
                .filter(|content| digest_hex(content) == *digest);
            let Some(content) = content else {
                return write_frame(
                    writer,
                    &Reply::error(
                        ErrorCode::WireInvalid,
                        format!("the copy of {:?} has no blob {digest}", self.project),
                    ),
                );
            };
            blobs.push((
                BlobRef {
                    digest: digest.clone(),
                    size: content.len() as u64,
                },
                Body::Bytes(content),
            ));
        }
        let header = Reply::WireBlobs(WireBlobs {
            session_id: String::new(),
            blobs: blobs.iter().map(|(b, _)| b.clone()).collect(),
        });
        write_with_bodies(writer, &header, blobs.iter().map(|(_, body)| body))
    }

    /// Handles `wire_pull_done`: commits the client's epoch and generation when its tree
    /// digest matches.
    pub(crate) fn pull_done(&mut self, conn: u64, done: &WirePullDone) -> Reply {
        if !self.pending_pull {
            return Reply::error(
                ErrorCode::WireSequence,
                "wire_pull_done without a pull waiting for it",
            );
        }
        self.pending_pull = false;
        let ours = self.manifest.tree_digest();
        if done.tree_digest != ours {
            log(
                conn,
                &format!(
                    "wire-sync: client tree digest {} differs from ours {ours} after a pull",
                    done.tree_digest
                ),
            );
            self.epoch = None;
            self.generation = None;
            return Reply::error(
                ErrorCode::WireStale,
                format!(
                    "tree digest {} differs from the sidecar's {ours}: send a full push next",
                    done.tree_digest
                ),
            );
        }
        self.epoch = Some(done.epoch.clone());
        self.generation = Some(done.generation);
        Reply::WirePullOk(WirePullOk {
            generation: done.generation,
        })
    }
}

/// Builds the mirror of a streamed push into an empty copy (`base`) from `entries`
/// (unique paths, parents first): directories and symlinks, the manifest and its tree
/// digest at once, then each file as `contents` delivers `(entry index, content)`, each
/// entry applied by the sync crate's [`apply_entry`] (what [`apply_changes`] applies).
/// `Err` names the entry at fault.
fn build_mirror(
    mut vfs: Vfs,
    entries: &[WireEntry],
    contents: &std::sync::mpsc::Receiver<Vec<Verified>>,
    kept: &std::sync::mpsc::Receiver<devshell_vm_sync::KeptOnDisk>,
) -> Result<(Vfs, Manifest, String), String> {
    fn apply(
        vfs: &mut Vfs,
        unused: &mut Manifest,
        entry: &WireEntry,
        content: Option<&Content>,
    ) -> Result<(), String> {
        apply_entry(vfs, VFS_ROOT, unused, entry, content).map_err(|e| e.to_string())
    }
    // A path listed twice would leave disk and mirror to the writers' order.
    let mut listed: HashSet<&str> = HashSet::with_capacity(entries.len());
    if let Some(twice) = entries.iter().find(|e| !listed.insert(&e.path)) {
        return Err(format!(
            "cannot apply the wire change at {:?}: listed twice in one push",
            twice.path
        ));
    }
    drop(listed);
    // Into an empty mirror nothing is replaced, so nothing leaves this scratch manifest.
    let mut unused = Manifest::default();
    let mut manifest = Manifest::default();
    for entry in entries.iter().filter(|e| e.kind != WireKind::File) {
        apply(&mut vfs, &mut unused, entry, None)?;
        manifest.upsert(entry.clone());
    }
    let mut files = entries.iter().filter(|e| e.kind == WireKind::File).count();
    // Kept files whose node is not in the mirror yet (their batch is still queued).
    let mut early: Vec<devshell_vm_sync::KeptOnDisk> = Vec::new();
    for batch in contents {
        early.extend(kept.try_iter());
        early.retain(|(path, content)| vfs.keep_on_disk(path, Arc::clone(content)).is_err());
        for (index, content, digest) in batch {
            let Some(entry) = entries.get(index).filter(|e| e.kind == WireKind::File) else {
                continue;
            };
            // The digest the blob was verified against, or the one computed for it.
            let mut entry = entry.clone();
            entry.digest = Some(digest);
            apply(&mut vfs, &mut unused, &entry, Some(&content))?;
            manifest.upsert(entry);
            files -= 1;
        }
    }
    if files != 0 {
        return Err(format!("{files} files of the push got no content"));
    }
    let tree_digest = manifest.tree_digest();
    Ok((vfs, manifest, tree_digest))
}

/// An error and its causes, each once, for a reply message that crosses the wire (the
/// client sees no `source()` chain).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        let part = next.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = next.source();
    }
    text
}

/// A verified blob: its index in the list read, its bytes, its digest (hex).
type Verified = devshell_vm_protocol::HashedBlob;

/// What [`read_verified`] read: contents by digest, each blob's digest (in order), and
/// the total size.
type ReadBlobs = (HashMap<String, Content>, Vec<String>, u64);

/// Reads and hashes the bulk frames of `blobs` ([`read_blobs_hashed`]; a blob announced
/// without a digest, in a streamed push without digests, gets the digest of its bytes).
/// `on_verified` sees each batch of verified blobs on the hashing thread. Returns the
/// contents by digest and each blob's digest (only with `keep`: a caller that takes them
/// from `on_verified` does not need them twice), and their total size.
fn read_verified<R: Read>(
    reader: &mut LineReader<R>,
    blobs: &[BlobRef],
    max_bytes: u64,
    keep: bool,
    mut on_verified: impl FnMut(Vec<Verified>) + Send,
) -> Result<ReadBlobs, ProtocolError> {
    let mut received: HashMap<String, Content> = HashMap::new();
    let mut digests: Vec<String> = Vec::new();
    read_blobs_hashed(
        reader,
        blobs,
        max_bytes,
        true,
        |_| {},
        |batch| {
            if keep {
                for (_, data, digest) in &batch {
                    received.insert(digest.clone(), Content::clone(data));
                    digests.push(digest.clone());
                }
            }
            on_verified(batch);
        },
    )?;
    let total = blobs.iter().map(|b| b.size).fold(0, u64::saturating_add);
    Ok((received, digests, total))
}

/// A content a pull sends: bytes in memory, or a tool's large output still unread on
/// disk (a [`LazyContent`] the scan left in the mirror), hashed and sent piece by piece
/// from its file. The latter never costs a buffer the size of the file, and the mirror
/// keeps only the file's descriptor, not its bytes (within the process-wide cap on such
/// descriptors, `devshell_vm_vfs::lazy::lazy_fd_limit`; beyond it the scan reads files
/// into memory as before).
enum Body {
    Bytes(Content),
    OnDisk(Arc<LazyContent>),
}

/// Writes a JSON header and, right after it, the bodies as bulk frames; one flush. A
/// body on disk that changed since it was hashed stops the stream with
/// [`ProtocolError::BulkFrame`] after a partial blob (the connection is then unusable
/// and is dropped).
fn write_with_bodies<'a, W: Write>(
    writer: &mut W,
    header: &Reply,
    bodies: impl Iterator<Item = &'a Body>,
) -> Result<(), ProtocolError> {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, writer);
    let mut line = devshell_vm_protocol::encode_reply(header).into_bytes();
    line.push(b'\n');
    out.write_all(&line).map_err(|source| ProtocolError::Io {
        context: "writing a frame",
        source,
    })?;
    for body in bodies {
        match body {
            Body::Bytes(content) => write_blob(&mut out, content)?,
            Body::OnDisk(unread) => {
                let size = unread.len();
                let mut sent = 0u64;
                unread
                    .for_each_chunk(|piece| {
                        sent += piece.len() as u64;
                        write_blob_piece(&mut out, piece, sent == size)
                    })
                    .map_err(|err| ProtocolError::BulkFrame {
                        message: format!("sending an output from the copy: {err}"),
                    })??;
            }
        }
    }
    out.flush().map_err(|source| ProtocolError::Io {
        context: "writing a frame",
        source,
    })
}

/// The mirror path of a relative wire path.
fn mirror_path(rel: &str) -> String {
    format!("{VFS_ROOT}/{rel}")
}

/// The relative wire path of a mirror path (`None` for the root itself).
fn relative(path: &str) -> Option<&str> {
    path.strip_prefix(VFS_ROOT)?
        .strip_prefix('/')
        .filter(|rel| !rel.is_empty())
}

/// How the sync crate's streamed push sees one entry of a `wire_push`.
fn stream_entry(e: &WireEntry) -> StreamEntry<'_> {
    StreamEntry {
        rel: &e.path,
        kind: match e.kind {
            WireKind::Dir => NodeKind::Dir,
            WireKind::File => NodeKind::File,
            WireKind::Symlink => NodeKind::Symlink,
        },
        mode: e.mode,
        mtime: ns_to_time(e.mtime_ns),
        target: e.target.as_deref(),
    }
}

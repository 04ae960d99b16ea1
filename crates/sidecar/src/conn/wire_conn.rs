//! The connection side of `wire-sync`: `wire_start`, the per-session project copies
//! checked out of the shared stores, and dispatch of the `wire_*` requests.

use std::collections::HashMap;
use std::io::{Read, Write};

use devshell_vm_protocol::{
    ErrorCode, HealthOk, LineReader, ProtocolError, Reply, Request, WireStart, WireStarted,
    write_frame,
};

use super::{Conn, Session, log};
use crate::confine::{Staging, normalize_mount};
use crate::wire::{Replica, WireStores};

/// A `wire-sync` session's store and its checked-out project copies.
pub(crate) struct WireSession {
    store: String,
    store_dir: std::path::PathBuf,
    projects: HashMap<String, Box<Replica>>,
}

impl WireSession {
    fn check_in_all(&mut self, stores: &WireStores) {
        for (_, replica) in self.projects.drain() {
            stores.check_in(&self.store, replica);
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.end_session();
    }
}

impl Conn<'_> {
    /// Ends the current session, returning its wire copies to the stores.
    pub(super) fn end_session(&mut self) {
        if let Some(mut session) = self.session.take()
            && let Some(wire) = session.wire.as_mut()
        {
            wire.check_in_all(&self.shared.wire);
        }
        self.wire_done = true;
    }

    pub(super) fn health(&self) -> Reply {
        Reply::HealthOk(HealthOk {
            status: if self.shared.is_shutting_down() {
                "stopping".to_owned()
            } else {
                "ok".to_owned()
            },
            connections: self.shared.open_connection_count() as u64,
        })
    }

    pub(super) fn wire_start(&mut self, start: &WireStart) -> Reply {
        self.end_session();
        let mount = match normalize_mount(&start.guest_workspace) {
            Ok(mount) => mount,
            Err(reason) => {
                return Reply::error(
                    ErrorCode::InvalidRequest,
                    format!("guest_workspace {:?}: {reason}", start.guest_workspace),
                );
            }
        };
        if start.client_id.is_empty() || start.client_id.len() > 256 {
            return Reply::error(
                ErrorCode::InvalidRequest,
                "client_id must hold 1 to 256 bytes",
            );
        }
        let stores = &self.shared.wire;
        let store = WireStores::store_name(self.shared.options.token.as_ref(), &start.client_id);
        let store_dir = match stores.open_store(&store) {
            Ok(dir) => dir,
            Err(message) => return Reply::error(ErrorCode::WireIo, message),
        };
        let staging = match Staging::open(&store_dir, mount) {
            Ok(staging) => staging,
            Err(errno) => {
                return Reply::error(
                    ErrorCode::WireIo,
                    format!(
                        "opening the store {}: {}",
                        store_dir.display(),
                        errno.desc()
                    ),
                );
            }
        };
        log(
            self.peer.id,
            &format!(
                "wire session {:?} started: store {store} mounted at {:?}",
                start.session_id,
                staging.mount()
            ),
        );
        self.session = Some(Session {
            id: start.session_id.clone(),
            staging,
            wire: Some(WireSession {
                store: store.clone(),
                store_dir,
                projects: HashMap::new(),
            }),
            confinement: std::sync::Mutex::new(None),
        });
        Reply::WireStarted(WireStarted {
            session_id: start.session_id.clone(),
            store,
        })
    }

    /// Serves one `wire_*` request of a started session.
    pub(super) fn wire_request<R: Read, W: Write>(
        &mut self,
        request: Request,
        reader: &mut LineReader<R>,
        writer: &mut W,
    ) -> Result<(), ProtocolError> {
        let conn = self.peer.id;
        let stores = &self.shared.wire;
        let max_bytes = stores.max_bytes();
        let Some(session) = self.session.as_mut() else {
            return write_frame(writer, &Reply::error(ErrorCode::NoSession, "no session"));
        };
        let mount = session.staging.mount().to_owned();
        let Some(wire) = session.wire.as_mut() else {
            // A shared-staging session: wire_blobs must still be read off the stream.
            if let Request::WireBlobs(header) = &request {
                for blob in &header.blobs {
                    if let Err(err) = reader.read_blob(blob, max_bytes) {
                        write_frame(writer, &Reply::error(err.error_code(), err.to_string()))?;
                        return Err(err);
                    }
                }
            }
            return write_frame(
                writer,
                &Reply::error(
                    ErrorCode::WireSequence,
                    format!("{} needs a session opened with wire_start", request.op()),
                ),
            );
        };
        let project_name = match &request {
            Request::WireProject(r) => Some(r.project.clone()),
            Request::WirePush(r) => Some(r.project.clone()),
            Request::WirePull(r) => Some(r.project.clone()),
            Request::WireWant(r) => Some(r.project.clone()),
            Request::WirePullDone(r) => Some(r.project.clone()),
            _ => None,
        };
        if let Request::WireProject(open) = &request {
            return open_project(stores, wire, &mount, open, conn, writer);
        }
        if let Request::WireBlobs(header) = &request {
            // Blobs belong to the one project with a pending push; without one they are
            // read and refused.
            if let Some(replica) = wire.projects.values_mut().find(|r| r.has_pending_push()) {
                return replica.receive_blobs(conn, header, reader, writer, max_bytes);
            }
            for blob in &header.blobs {
                if let Err(err) = reader.read_blob(blob, max_bytes) {
                    write_frame(writer, &Reply::error(err.error_code(), err.to_string()))?;
                    return Err(err);
                }
            }
            return write_frame(
                writer,
                &Reply::error(
                    ErrorCode::WireSequence,
                    "wire_blobs without a push waiting for blobs",
                ),
            );
        }
        let project = project_name.unwrap_or_default();
        let Some(replica) = wire.projects.get_mut(&project) else {
            return write_frame(
                writer,
                &Reply::error(
                    ErrorCode::WireSequence,
                    format!("project {project:?} was not opened with wire_project on this session"),
                ),
            );
        };
        match request {
            Request::WirePush(push) if push.stream => {
                replica.push_streamed(conn, push, reader, writer, max_bytes)
            }
            Request::WirePush(push) => {
                let reply = replica.push(conn, push, max_bytes);
                write_frame(writer, &reply)
            }
            Request::WirePull(_) => replica.pull(conn, writer, max_bytes),
            Request::WireWant(want) => replica.want(&want, writer),
            Request::WirePullDone(done) => {
                let reply = replica.pull_done(conn, &done);
                write_frame(writer, &reply)
            }
            other => write_frame(
                writer,
                &Reply::error(ErrorCode::UnknownOp, format!("unexpected {}", other.op())),
            ),
        }
    }
}

/// `wire_project`: checks the copy out (once per session), applies the client's
/// excludes, verifies it against its staging tree and describes it.
fn open_project<W: Write>(
    stores: &WireStores,
    wire: &mut WireSession,
    mount: &str,
    open: &devshell_vm_protocol::WireProject,
    conn: u64,
    writer: &mut W,
) -> Result<(), ProtocolError> {
    if !wire.projects.contains_key(&open.project) {
        match stores.check_out(&wire.store, &wire.store_dir, &open.project) {
            Ok(mut replica) => {
                if let Err(message) = replica.set_excludes(&open.excludes) {
                    stores.check_in(&wire.store, replica);
                    return write_frame(writer, &Reply::error(ErrorCode::WireInvalid, message));
                }
                replica.verify(conn);
                wire.projects.insert(open.project.clone(), replica);
            }
            Err((code, message)) => {
                return write_frame(writer, &Reply::error(code, message));
            }
        }
    } else if let Some(replica) = wire.projects.get_mut(&open.project)
        && let Err(message) = replica.set_excludes(&open.excludes)
    {
        return write_frame(writer, &Reply::error(ErrorCode::WireInvalid, message));
    }
    let replica = &wire.projects[&open.project];
    log(
        conn,
        &format!(
            "wire-sync: project {:?} opened: {replica:?}",
            replica.project()
        ),
    );
    write_frame(
        writer,
        &Reply::WireProjectOk(Box::new(replica.describe(mount))),
    )
}

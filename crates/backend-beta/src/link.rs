//! [`Link`]: the session's lazily (re)opened connection plus everything needed to open
//! it — endpoint, staging directory, guest mount — and the one rule for failures: a
//! connection-failure error drops the connection, so it is reported once and the next
//! call connects, handshakes and starts the session again.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::Duration;

use devshell_vm_config::WorkspaceMode;
use devshell_vm_exec::CancelHandle;
use devshell_vm_protocol::{
    Exec, OutputStream, Reply, Request, SessionStart, WireEntry, WirePush, encode_request,
};

use crate::BetaError;
use crate::conn::{CLIENT_NAME, Capabilities, Connection, Endpoint, ExecEnd};

/// Connection state of a session.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) endpoint: Endpoint,
    /// Host staging directory (shared with the sidecar), as a path and as sent.
    pub(crate) staging: PathBuf,
    pub(crate) staging_wire: String,
    /// Whether this session created `staging` (and removes it in Mode S).
    pub(crate) owns_staging: bool,
    pub(crate) staging_created: bool,
    pub(crate) mount: String,
    pub(crate) mode: WorkspaceMode,
    pub(crate) conn: Option<Connection>,
    /// Connections opened so far (the session id's suffix).
    pub(crate) connects: u64,
    /// `DEVSHELL_VM_BETA_SYNC`: shared staging, wire-sync, or pick.
    pub(crate) sync: devshell_vm_config::BetaSync,
    /// Stable client id sent in `wire_start`.
    pub(crate) client_id: String,
}

impl Link {
    /// Creates the staging directory if needed (`0700` when this session owns it).
    pub(crate) fn prepare_staging(&mut self) -> Result<(), BetaError> {
        if self.staging_created {
            return Ok(());
        }
        let mut builder = DirBuilder::new();
        builder.recursive(true);
        if self.owns_staging {
            builder.mode(0o700);
        }
        builder
            .create(&self.staging)
            .map_err(|err| BetaError::Staging {
                path: self.staging.clone(),
                reason: format!("cannot create it: {err}"),
            })?;
        if !self.staging.is_dir() {
            return Err(BetaError::Staging {
                path: self.staging.clone(),
                reason: "exists but is not a directory".to_owned(),
            });
        }
        self.staging_created = true;
        Ok(())
    }

    /// The open connection, opening it (connect, handshake, `session_start`) if needed.
    pub(crate) fn connection(&mut self) -> Result<&mut Connection, BetaError> {
        if self.conn.is_none() {
            self.prepare_staging()?;
            let mut conn = Connection::open(&self.endpoint, &self.staging)?;
            self.connects += 1;
            let start = SessionStart {
                session_id: format!("beta-{}-{}", std::process::id(), self.connects),
                staging_dir: self.staging_wire.clone(),
                guest_workspace: self.mount.clone(),
                backend: "beta".to_owned(),
                backend_config: serde_json::json!({
                    "client": CLIENT_NAME,
                    "workspace_mode": self.mode.as_str(),
                }),
            };
            if self.mode == WorkspaceMode::Sync {
                crate::wire::start_session(
                    &mut conn,
                    self.sync,
                    start,
                    &self.staging,
                    &self.client_id,
                )?;
            } else {
                conn.start_session(start)?;
            }
            self.conn = Some(conn);
        }
        Ok(self
            .conn
            .as_mut()
            .expect("the connection was opened just above"))
    }

    /// Capabilities of the current connection (opening it if needed).
    pub(crate) fn capabilities(&mut self) -> Result<Capabilities, BetaError> {
        Ok(self.connection()?.caps)
    }

    /// `true` when the current connection (opened if needed) syncs over the wire.
    pub(crate) fn uses_wire(&mut self) -> Result<bool, BetaError> {
        Ok(self.connection()?.wire)
    }

    /// [`Self::settle`] for callers outside this module.
    pub(crate) fn settle_pub<T>(&mut self, result: Result<T, BetaError>) -> Result<T, BetaError> {
        self.settle(result)
    }

    /// Bytes `(sent, received)` on the current connection (zeros when none is open).
    pub(crate) fn bytes(&self) -> (u64, u64) {
        self.conn.as_ref().map_or((0, 0), Connection::bytes)
    }

    /// Drops the connection if `result` is a connection failure.
    fn settle<T>(&mut self, result: Result<T, BetaError>) -> Result<T, BetaError> {
        if let Err(err) = &result
            && err.is_connection_failure()
        {
            self.conn = None;
        }
        result
    }

    /// One request → reply exchange; `build` receives the session id.
    pub(crate) fn call(
        &mut self,
        build: impl FnOnce(String) -> Request,
    ) -> Result<Reply, BetaError> {
        let result = self.connection().and_then(|conn| {
            let session_id = conn
                .session_id
                .clone()
                .expect("a connection in the link always has a started session");
            conn.request(&build(session_id))
        });
        self.settle(result)
    }

    /// A streamed `wire_push` (`wire-sync-stream`): the line and its blobs at once, then
    /// its one reply. Once the line is encoded its entries are handed to `meanwhile`,
    /// which runs on another thread while the bytes go out (the caller builds its
    /// manifest there). The sidecar closes the connection after refusing a streamed
    /// push (the frames cannot be skipped), answering first: the answer is read even
    /// when sending failed half-way, and after any `error` reply the connection is
    /// dropped here too (the next call reconnects).
    pub(crate) fn push_streamed<T: Send>(
        &mut self,
        push: WirePush,
        blobs: &[&[u8]],
        meanwhile: impl FnOnce(Vec<WireEntry>) -> T + Send,
    ) -> Result<(Reply, T), BetaError> {
        let conn = self.connection()?;
        let session_id = conn.session_id.clone().unwrap_or_default();
        let request = Request::WirePush(WirePush { session_id, ..push });
        let line = encode_request(&request);
        let Request::WirePush(push) = request else {
            unreachable!("built as a wire_push just above")
        };
        let (result, made) = std::thread::scope(|scope| {
            let making = scope.spawn(move || meanwhile(push.entries));
            let result = match conn.send_line_with_blobs("wire_push", line, blobs) {
                Ok(()) => conn.read_wire_reply("wire_push"),
                // Cut off while sending: the sidecar may have answered before closing.
                Err(sending @ BetaError::ConnectionLost { .. }) => {
                    match conn.read_wire_reply("wire_push") {
                        Ok(reply @ Reply::Error(_)) => Ok(reply),
                        _ => Err(sending),
                    }
                }
                // Nothing was sent (a line over the frame limit), or a timeout.
                Err(other) => Err(other),
            };
            (result, making.join())
        });
        let Ok(made) = made else {
            self.conn = None;
            return Err(BetaError::Protocol {
                transport: self.endpoint.transport.to_string(),
                during: "wire_push".to_owned(),
                message: "the manifest thread panicked".to_owned(),
            });
        };
        if matches!(result, Ok(Reply::Error(_))) {
            self.conn = None;
        }
        self.settle(result).map(|reply| (reply, made))
    }

    /// A protocol violation for `reply` (drops the connection).
    pub(crate) fn unexpected(&mut self, during: &str, reply: &Reply) -> BetaError {
        let err = match &self.conn {
            Some(conn) => conn.unexpected(during, reply),
            None => BetaError::Protocol {
                transport: self.endpoint.transport.to_string(),
                during: during.to_owned(),
                message: format!("unexpected reply `{}`", reply.op()),
            },
        };
        self.conn = None;
        err
    }

    /// Runs one `exec` (see [`Connection::exec`]); a cancelled run drops the connection,
    /// which makes the sidecar kill the process group.
    pub(crate) fn exec(
        &mut self,
        build: impl FnOnce(String) -> Exec,
        budget: Option<Duration>,
        cancel: Option<&CancelHandle>,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<ExecEnd, BetaError> {
        let result = self.connection().and_then(|conn| {
            let session_id = conn
                .session_id
                .clone()
                .expect("a connection in the link always has a started session");
            conn.exec(build(session_id), budget, cancel, on_output)
        });
        let result = self.settle(result);
        if matches!(result, Ok(ExecEnd::Cancelled)) {
            self.conn = None;
        }
        result
    }

    /// Sends `session_shutdown` if connected, then drops the connection.
    pub(crate) fn shutdown(&mut self) -> Result<(), BetaError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let session_id = conn.session_id.clone().unwrap_or_default();
        let result = conn.request(&Request::SessionShutdown(
            devshell_vm_protocol::SessionShutdown {
                session_id,
                stop_vm: false,
            },
        ));
        let transport = conn.transport().to_owned();
        self.conn = None;
        match result {
            Ok(Reply::ShutdownOk(_)) => Ok(()),
            Ok(Reply::Error(err)) => Err(BetaError::Remote {
                during: "session_shutdown".to_owned(),
                code: err.code.to_string(),
                message: err.message,
            }),
            Ok(other) => Err(BetaError::Protocol {
                transport,
                during: "session_shutdown".to_owned(),
                message: format!("unexpected reply `{}`", other.op()),
            }),
            // Nothing left to shut down on a connection that is gone.
            Err(err) if err.is_connection_failure() => Ok(()),
            Err(err) => Err(err),
        }
    }
}

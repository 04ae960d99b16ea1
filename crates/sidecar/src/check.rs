//! `--check ADDRESS`: a cheap health probe for container orchestrators. Connects to a
//! running sidecar (TCP `HOST:PORT`, or an absolute Unix socket path), sends one
//! `health` request — answered before authentication, so the probe needs no token — and
//! succeeds when the answer is `health_ok` with status `ok`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use devshell_vm_protocol::{Health, Reply, Request, encode_request, parse_reply};

use crate::error::SidecarError;

/// Probes the sidecar at `address` within `timeout`; returns the status line it printed.
///
/// # Errors
/// [`SidecarError::Check`] naming the address and what failed.
pub fn check(address: &str, timeout: Duration) -> Result<String, SidecarError> {
    let fail = |reason: String| SidecarError::Check {
        address: address.to_owned(),
        reason,
    };
    let line = if address.starts_with('/') {
        let stream = UnixStream::connect(address).map_err(|err| fail(err.to_string()))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|err| fail(err.to_string()))?;
        exchange(
            stream.try_clone().map_err(|err| fail(err.to_string()))?,
            stream,
        )
    } else {
        let target = address
            .to_socket_addrs()
            .map_err(|err| fail(err.to_string()))?
            .next()
            .ok_or_else(|| fail("resolves to no address".to_owned()))?;
        let stream =
            TcpStream::connect_timeout(&target, timeout).map_err(|err| fail(err.to_string()))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|err| fail(err.to_string()))?;
        exchange(
            stream.try_clone().map_err(|err| fail(err.to_string()))?,
            stream,
        )
    }
    .map_err(|err| fail(err.to_string()))?;
    match parse_reply(&line).map_err(|err| fail(err.to_string()))? {
        Reply::HealthOk(ok) if ok.status == "ok" => {
            Ok(format!("ok ({} connections)", ok.connections))
        }
        Reply::HealthOk(ok) => Err(fail(format!("status {:?}", ok.status))),
        other => Err(fail(format!("unexpected reply `{}`", other.op()))),
    }
}

fn exchange<R: std::io::Read, W: Write>(reader: R, mut writer: W) -> std::io::Result<String> {
    let mut request = encode_request(&Request::Health(Health {}));
    request.push('\n');
    writer.write_all(request.as_bytes())?;
    writer.flush()?;
    let mut line = String::new();
    // The reply is one short line; cap what is read.
    BufReader::new(std::io::Read::take(reader, 64 * 1024)).read_line(&mut line)?;
    Ok(line)
}

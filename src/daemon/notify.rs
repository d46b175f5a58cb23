//! systemd readiness and status (`Type=notify`), for units that run us without `--detach`.
//!
//! Each call is a no-op without `$NOTIFY_SOCKET`, so the daemon calls them unconditionally.
//! A failure to notify is logged, never fatal: systemd's own start timeout reports it better
//! than stopping a working daemon would.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// `READY=1`, plus `MAINPID` so that a `--monitor` worker (a child of the unit's main
/// process) is accepted with `NotifyAccess=all` and tracked as the service.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::MainPid(std::process::id())]);
}

/// `STOPPING=1`: shutdown has begun (IPsec state is being removed).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `STATUS=...`: the one-line status `systemctl status` shows.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::process::Command;

    /// Not a test of its own: the child process of the test below, which gets NOTIFY_SOCKET
    /// from its parent (changing the environment of the threaded test process is unsound).
    #[test]
    fn notify_child() {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            super::ready();
            super::status("3 tunnels up");
            super::stopping();
        }
    }

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "daemon::notify::tests::notify_child", "--quiet"])
            .env("NOTIFY_SOCKET", &path)
            .output()
            .unwrap();
        assert!(child.status.success(), "{child:?}");

        socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let mut next = || {
            let n = socket.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let ready = next();
        assert!(ready.starts_with("READY=1\nMAINPID="), "{ready}");
        assert_eq!(next(), "STATUS=3 tunnels up\n");
        assert_eq!(next(), "STOPPING=1\n");
    }
}

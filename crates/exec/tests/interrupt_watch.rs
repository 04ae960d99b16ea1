//! Cancel-on-interrupt, in its own test binary because it signals this process
//! (and pending signals are shared with forwarding runs).

use std::time::Duration;

use nix::sys::signal::{Signal, raise};

#[test]
fn an_interrupt_watch_fires_its_cancel_handle_and_the_caller_survives() {
    let cancel = devshell_vm_exec::CancelHandle::new();
    let watch = devshell_vm_exec::cancel_on_interrupt(&cancel).expect("install");
    assert!(!cancel.is_cancelled());
    raise(Signal::SIGTERM).expect("raise SIGTERM");
    let mut fired = false;
    for _ in 0..500 {
        if cancel.is_cancelled() {
            fired = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(watch);
    assert!(fired, "SIGTERM did not fire the cancel handle");
}

//! The crash-test hook: `LOOP_OPERATOR_CRASH_AT=<step>` makes the operator kill itself with
//! SIGKILL (no cleanup, no flush) at that step of an issue (`after-mint`, `after-register`,
//! `after-secret`, `before-status`), so the end-to-end tests can prove that a crash at any point
//! leaves no orphan (promise 3). I/O: signals its own process.

/// Die here if the hook names this step.
pub fn point(configured: Option<&str>, step: &str) {
    if configured != Some(step) {
        return;
    }
    tracing::error!(
        step,
        "crash point reached (LOOP_OPERATOR_CRASH_AT); killing this process"
    );
    // SIGKILL reaches a multi-threaded process asynchronously: wait for it here.
    if rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
        .is_ok()
    {
        loop {
            std::thread::park();
        }
    }
    std::process::abort();
}

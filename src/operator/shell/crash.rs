//! The crash-test hook: `LOOP_OPERATOR_CRASH_AT=<step>` makes the operator kill itself with
//! SIGKILL (no cleanup, no flush) at that step of an issue (`after-mint`, `after-register`,
//! `after-secret`, `before-status`), so the end-to-end tests can prove that a crash at any point
//! leaves no orphan (promise 3). I/O: signals its own process.
//!
//! Compiled into debug builds only (the test suite's): a release binary ignores the variable,
//! with a warning, so nobody can make a production operator kill itself through its
//! environment.

/// The environment variable that names the step.
pub const ENV: &str = "LOOP_OPERATOR_CRASH_AT";

/// The configured crash step: the variable's value in a debug build; `None` in a release build
/// (warning once if the variable is set).
pub fn configured() -> Option<String> {
    let value = std::env::var(ENV).ok()?;
    if cfg!(debug_assertions) {
        Some(value)
    } else {
        tracing::warn!(
            variable = ENV,
            "the crash-test hook exists only in debug builds; ignored"
        );
        None
    }
}

/// Die here if the hook names this step.
pub fn point(configured: Option<&str>, step: &str) {
    #[cfg(debug_assertions)]
    if configured == Some(step) {
        die(step);
    }
    #[cfg(not(debug_assertions))]
    let _ = (configured, step);
}

#[cfg(debug_assertions)]
fn die(step: &str) -> ! {
    tracing::error!(step, "crash point reached ({ENV}); killing this process");
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

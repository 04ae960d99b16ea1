//! What to run: [`ToolRequest`] and its stdio modes.

use std::time::Duration;

/// Where the child's stdin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdinMode {
    /// `/dev/null` (the default: a tool must never consume its caller's input by accident).
    #[default]
    Null,
    /// The caller's stdin (interactive use at a terminal).
    Inherit,
}

/// What happens to one output stream of the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Shares the caller's stream (the default: a person sees cargo's output live).
    #[default]
    Inherit,
    /// Collected into [`crate::ExecOutcome::stdout`] / [`crate::ExecOutcome::stderr`].
    Capture,
    /// Delivered to the `on_output` callback of [`crate::run`] in arrival order, not kept.
    Stream,
    /// Discarded.
    Null,
}

/// One tool invocation: program, arguments, environment additions, stdio and limits.
///
/// The working directory is not part of the request: backends derive it from the
/// workspace layout and pass it to [`crate::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRequest {
    /// Program name (looked up with [`crate::resolve_program`]) or path.
    pub program: String,
    /// Arguments, passed unchanged (no shell).
    pub args: Vec<String>,
    /// Environment variables added to (or overriding) the inherited environment.
    pub env: Vec<(String, String)>,
    /// Where stdin comes from.
    pub stdin: StdinMode,
    /// What happens to stdout.
    pub stdout: OutputMode,
    /// What happens to stderr.
    pub stderr: OutputMode,
    /// Kill the whole process group when this much time has passed.
    pub timeout: Option<Duration>,
    /// Forward `SIGINT`, `SIGTERM` and `SIGHUP` received by this process while the
    /// tool runs to the tool's process group (Ctrl-C at a terminal stops the tool,
    /// and the caller keeps control to finish its work, e.g. pull the workspace).
    pub forward_interrupts: bool,
}

impl ToolRequest {
    /// A request with inherited output, null stdin, no timeout and no extra environment.
    #[must_use]
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            stdin: StdinMode::Null,
            stdout: OutputMode::Inherit,
            stderr: OutputMode::Inherit,
            timeout: None,
            forward_interrupts: false,
        }
    }

    /// A run for a person at a terminal, as the seed's `run_rust_tool` does it: the
    /// caller's stdin, stdout and stderr, and Ctrl-C forwarded to the tool.
    #[must_use]
    pub fn interactive(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self::new(program, args)
            .stdin(StdinMode::Inherit)
            .forward_interrupts(true)
    }

    /// Adds one environment variable.
    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets the stdin mode.
    #[must_use]
    pub fn stdin(mut self, mode: StdinMode) -> Self {
        self.stdin = mode;
        self
    }

    /// Sets the stdout mode.
    #[must_use]
    pub fn stdout(mut self, mode: OutputMode) -> Self {
        self.stdout = mode;
        self
    }

    /// Sets the stderr mode.
    #[must_use]
    pub fn stderr(mut self, mode: OutputMode) -> Self {
        self.stderr = mode;
        self
    }

    /// Sets (or clears) the timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Keeps the request's own timeout, or takes `default` when it has none (a
    /// session's exec timeout).
    #[must_use]
    pub fn or_timeout(mut self, default: Option<Duration>) -> Self {
        self.timeout = self.timeout.or(default);
        self
    }

    /// Enables or disables interrupt forwarding.
    #[must_use]
    pub fn forward_interrupts(mut self, forward: bool) -> Self {
        self.forward_interrupts = forward;
        self
    }
}

//! Running commands and reporting their failures with everything needed to debug them.

use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Runs `cmd` to completion and returns its standard output; a non-zero exit is an error that
/// carries the command line and its standard error.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    run_with_input(cmd, None)
}

/// Like [`run`], writing `input` to the command's standard input first.
pub(crate) fn run_with_input(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    use std::io::Write;
    let what = describe(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::Command {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .map_err(Error::io(format!("writing to {what}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(Error::io(format!("waiting for {what}")))?;
    if !out.status.success() {
        return Err(Error::Command {
            what,
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command line as a person would type it, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

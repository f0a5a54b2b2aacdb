//! `rdmaq exec --tenant T -- PROGRAM ARGS`: runs a program under the intercept library
//! with a launcher-named tenant (honoured where the agent's rules allow it).

use std::{os::unix::process::CommandExt, path::PathBuf, process::Command};

use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The tenant to run as (the agent decides whether a launcher may name it).
    #[arg(long)]
    pub tenant: Option<String>,
    /// The intercept library (default: $RDMAQ_INTERCEPT_LIB, next to this binary, or
    /// /usr/lib/rdmaq/librdmaq_intercept.so).
    #[arg(long, env = "RDMAQ_INTERCEPT_LIB")]
    pub lib: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn default_lib() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()?
        .parent()?
        .join("librdmaq_intercept.so");
    [
        beside,
        PathBuf::from("/usr/lib/rdmaq/librdmaq_intercept.so"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

pub fn run(args: ExecArgs) -> anyhow::Result<String> {
    let lib = match args.lib.or_else(default_lib) {
        Some(l) if l.is_file() => l,
        Some(l) => bail!("intercept library {} not found", l.display()),
        None => bail!("no intercept library found; pass --lib or set RDMAQ_INTERCEPT_LIB"),
    };
    let lib = lib
        .canonicalize()
        .with_context(|| format!("{}", lib.display()))?;
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(existing) if !existing.is_empty() => format!("{} {existing}", lib.display()),
        _ => lib.display().to_string(),
    };
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]).env("LD_PRELOAD", preload);
    if let Some(t) = &args.tenant {
        cmd.env("RDMAQ_TENANT", t);
    }
    // exec only returns on failure.
    let err = cmd.exec();
    bail!("cannot run {:?}: {err}", args.command[0])
}

//! The command line: clap types live here and nowhere else.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::error::Error;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Converge hosts to a policy repository of roles, cookbooks and a pinned package whitelist"
)]
struct Cli {
    /// The policy repository.
    #[arg(long, global = true, default_value = ".", value_name = "DIR")]
    repo: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Converge a target to its roles and run list.
    Converge(ConvergeArgs),
    /// Validate the whole repository without touching any host.
    Check,
    /// Explain, promote and audit package pins.
    #[command(subcommand)]
    Whitelist(WhitelistCommand),
}

#[derive(Subcommand)]
enum WhitelistCommand {
    /// For each package, the version a node gets and the rule it comes from.
    Explain {
        #[arg(long)]
        fqdn: Option<String>,
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Move a rollout's versions into the base pins and remove the rollout.
    Promote { rollout: String },
    /// Packages on a target that differ from their pins, or that nothing manages.
    Audit {
        /// Audit this directory tree instead of the running system.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Default: the fqdn of the target's last kiln run.
        #[arg(long)]
        fqdn: Option<String>,
        /// Default: the roles of the target's last kiln run.
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ConvergeArgs {
    /// A role to apply (repeatable); its run list is expanded recursively.
    #[arg(long = "role", value_name = "R")]
    roles: Vec<String>,
    /// A run-list item such as recipe[apache2] or role[web] (repeatable).
    #[arg(long = "run-list", value_name = "ITEM")]
    run_list: Vec<String>,
    /// The node's fully qualified name (default: the target's hostname).
    #[arg(long)]
    fqdn: Option<String>,
    /// A node file: fqdn, run_list, size and [attributes].
    #[arg(long, value_name = "FILE")]
    node: Option<PathBuf>,
    /// A developer VM size defined by a role ([sizes.NAME]).
    #[arg(long)]
    size: Option<String>,
    /// Converge this directory tree instead of the running system.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print what would change, with diffs, and change nothing.
    #[arg(long)]
    why_run: bool,
    /// Print the run report as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 0 when nothing changed, 2 when something changed, 4 on failure, 6 for both.
    #[arg(long)]
    detailed_exitcodes: bool,
}

/// Parses arguments, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Converge(a) => {
            let lock_timeout = std::env::var("KILN_LOCK_TIMEOUT")
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or(Duration::from_secs(60), Duration::from_secs);
            commands::converge::run(commands::converge::Converge {
                repo: cli.repo,
                roles: a.roles,
                run_list: a.run_list,
                fqdn: a.fqdn,
                node: a.node,
                size: a.size,
                root: a.root,
                why_run: a.why_run,
                json: a.json,
                detailed_exitcodes: a.detailed_exitcodes,
                lock_timeout,
            })
        }
        Command::Check => commands::check::run(&cli.repo),
        Command::Whitelist(w) => match w {
            WhitelistCommand::Explain { fqdn, roles, json } => {
                commands::whitelist::explain(&cli.repo, fqdn.as_deref(), &roles, json)
            }
            WhitelistCommand::Promote { rollout } => {
                commands::whitelist::promote(&cli.repo, &rollout)
            }
            WhitelistCommand::Audit {
                root,
                fqdn,
                roles,
                json,
            } => {
                commands::whitelist::audit(&cli.repo, root.as_ref(), fqdn.as_deref(), &roles, json)
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report_error(&e);
            1
        }
    }
}

fn report_error(e: &Error) {
    match e {
        Error::Policy(_) => eprintln!("{e}"),
        _ => eprintln!("error: {e}"),
    }
}

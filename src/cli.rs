//! The command line: clap types live here and nowhere else.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::engine::Converge;
use crate::error::Error;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Converge hosts to a policy repository of roles, cookbooks and a pinned package whitelist"
)]
struct Cli {
    /// The policy repository (default: the current directory, else the
    /// copy installed in /etc/kiln/policy).
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
    Check {
        /// An inventory whose hosts must each be able to read the secrets they use
        /// (default: the one secrets/recipients.toml names, else ./inventory.toml if any).
        #[arg(long, value_name = "FILE")]
        inventory: Option<PathBuf>,
    },
    /// Converge each role twice in a throwaway Debian root and run its verify checks.
    Test(TestArgs),
    /// The inside of a `kiln test` target (internal).
    #[command(name = "__sandbox", hide = true)]
    Sandbox {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        role: String,
        #[arg(long)]
        fqdn: String,
        #[arg(long)]
        size: Option<String>,
        #[arg(long)]
        strict_pins: bool,
    },
    /// One program of a `--root` tree, run in a sandbox (internal).
    #[command(name = "__root-exec", hide = true)]
    RootExec {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        read_only: bool,
        #[arg(last = true, required = true)]
        argv: Vec<std::ffi::OsString>,
    },
    /// Roll the policy out to an inventory of hosts over SSH, and see their state.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Converge this host on an interval, from a repository or a published bundle.
    Agent(AgentArgs),
    /// Run the verify checks of roles on this target (fleet health checks).
    #[command(hide = true)]
    Verify {
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        #[arg(long)]
        fqdn: Option<String>,
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Converge first (as `converge --json`); check only after a successful converge.
        #[arg(long)]
        converge: bool,
        /// With --converge: converge --why-run, and check nothing.
        #[arg(long)]
        why_run: bool,
        /// A node file (fqdn, run_list, attributes): a bundle's nodes/FQDN.toml.
        #[arg(long, value_name = "FILE")]
        node: Option<PathBuf>,
        /// A developer VM size defined by a role ([sizes.NAME]).
        #[arg(long)]
        size: Option<String>,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Check a bundle's signature against an allowed_signers file (what fleet hosts run before unpacking).
    #[command(name = "verify-bundle", hide = true)]
    VerifyBundle {
        file: PathBuf,
        /// The SSHSIG signature (default: FILE.sig).
        #[arg(long, value_name = "FILE")]
        signature: Option<PathBuf>,
        #[arg(long, value_name = "FILE", default_value = crate::trust::ALLOWED_SIGNERS)]
        allowed_signers: PathBuf,
        /// With no allowed_signers file yet: start from the bundle's kiln cookbook copy.
        #[arg(long)]
        first_contact: bool,
    },
    /// Unpack a verified bundle (what fleet hosts run after verify-bundle): every member a regular file, once; no older serial than this host converged.
    #[command(name = "unpack-bundle", hide = true)]
    UnpackBundle { file: PathBuf, dest: PathBuf },
    /// A fleet host's end of push and status: one JSON request on stdin, one JSON report on stdout.
    #[command(name = "__host", hide = true)]
    Host,
    /// Explain, promote and audit package pins.
    #[command(subcommand)]
    Whitelist(WhitelistCommand),
    /// The managed state of a target as one sha256, to compare hosts.
    Fingerprint(FingerprintArgs),
    /// Encrypted secrets of the repository: set, show, list, rekey.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Developer VMs: build an image of a role, boot it with QEMU, reach it.
    Devvm(DevvmArgs),
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Encrypt a value (standard input, or --file) to the secret's recipients.
    Set {
        /// The secret's name, e.g. mariadb/app_password (secrets/NAME.age).
        name: String,
        /// Read the value from this file instead of standard input.
        #[arg(long, value_name = "F")]
        file: Option<PathBuf>,
        #[command(flatten)]
        inv: SecretInventory,
    },
    /// Print a secret's value (for a person holding a recipient's identity).
    Show {
        name: String,
        #[command(flatten)]
        id: SecretIdentity,
    },
    /// Every secret, who can read it, and which roles use it.
    List {
        #[command(flatten)]
        inv: SecretInventory,
    },
    /// Re-encrypt the secrets whose recipient set changed (only those).
    Rekey {
        #[command(flatten)]
        id: SecretIdentity,
        #[command(flatten)]
        inv: SecretInventory,
    },
}

#[derive(Args)]
struct SecretInventory {
    /// The inventory whose hosts roles resolve to (default: the one
    /// secrets/recipients.toml names, else ./inventory.toml if any).
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
}

#[derive(Args)]
struct SecretIdentity {
    /// The private key to decrypt with: an unencrypted ssh-ed25519 key or an
    /// age identity file (default: ~/.ssh/id_ed25519; a host uses /etc/ssh/ssh_host_ed25519_key).
    #[arg(long, value_name = "PATH", env = "KILN_IDENTITY")]
    identity: Option<PathBuf>,
}

#[derive(Args)]
struct DevvmArgs {
    /// Where VMs keep their state (default: in kiln's cache).
    #[arg(
        long,
        global = true,
        env = "KILN_DEVVM_VMS",
        value_name = "DIR",
        hide = true
    )]
    vms_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: commands::devvm::DevvmCommand,
}

#[derive(Args)]
struct TestArgs {
    /// Roles to test (default: every role in the repository).
    roles: Vec<String>,
    /// Test on this Debian release (codename, repeatable); default: every
    /// release the whitelist pins.
    #[arg(long = "release", value_name = "CODENAME")]
    releases: Vec<String>,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Keep each target root for debugging (its path is printed).
    #[arg(long)]
    keep: bool,
    #[arg(long)]
    json: bool,
    /// The fqdn the test node has (default: test-ROLE.kiln.test).
    #[arg(long)]
    fqdn: Option<String>,
    /// A size of the role ([sizes.NAME]).
    #[arg(long)]
    size: Option<String>,
    /// Seconds one role may take before it is stopped.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Refuse a pinned version that no source offers any more, as production
    /// does, instead of testing with what the sources offer (with a warning).
    #[arg(long)]
    strict_pins: bool,
    /// Print the cached base root's path (building it if missing) and exit:
    /// for benchmarks, which converge the same root the tests do.
    #[arg(long, hide = true)]
    print_base_root: bool,
}

#[derive(Subcommand)]
enum WhitelistCommand {
    /// For each package, the version a node gets and the rule it comes from.
    Explain {
        #[arg(long)]
        fqdn: Option<String>,
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        /// Only this Debian release (codename); default: every release the
        /// whitelist pins (with --siblings: the target's own).
        #[arg(long, value_name = "CODENAME")]
        release: Option<String>,
        /// Also list the binary packages that follow each pin (built from
        /// the same source), read from this system's apt index.
        #[arg(long)]
        siblings: bool,
        /// With --siblings: read the index of this directory tree instead.
        #[arg(long, value_name = "DIR", requires = "siblings")]
        root: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Move a rollout's versions into the base pins and remove the rollout.
    Promote { rollout: String },
    /// Packages on a target that differ from their pins, or that nothing manages.
    Audit {
        #[command(flatten)]
        node: WhitelistNode,
        #[arg(long)]
        json: bool,
    },
    /// For each pin in force on a target, the newer versions its sources
    /// offer (security updates marked) and pins no source offers any more.
    Outdated {
        #[command(flatten)]
        node: WhitelistNode,
        #[arg(long)]
        json: bool,
    },
    /// Write a rollout of newer versions for canaries (default: every
    /// security update of a pin in force on the target).
    Stage {
        /// The rollout's name: [rollouts.NAME].
        name: String,
        /// Only these packages, each at the newest version offered.
        packages: Vec<String>,
        /// Hosts the rollout goes to first (fnmatch on the fqdn).
        #[arg(long = "hosts", value_name = "GLOB")]
        hosts: Vec<String>,
        /// Roles the rollout goes to first.
        #[arg(long = "roles", value_name = "R")]
        rollout_roles: Vec<String>,
        #[command(flatten)]
        node: WhitelistNode,
    },
    /// Write an apt repository of every pinned version (and each
    /// rollout's) with its siblings, to publish as the team's mirror.
    Mirror {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only the packages these roles install (default: every role).
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        /// The Debian release whose pins and archive the mirror holds
        /// (default: this system's).
        #[arg(long, value_name = "CODENAME")]
        release: Option<String>,
    },
}

/// The target whose packages, sources and pins `audit`, `outdated` and
/// `stage` read.
#[derive(Args)]
struct WhitelistNode {
    /// This directory tree instead of the running system.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Default: the fqdn of the target's last kiln run.
    #[arg(long)]
    fqdn: Option<String>,
    /// Default: the roles of the target's last kiln run.
    #[arg(long = "role", value_name = "R")]
    roles: Vec<String>,
    /// The Debian release (codename) the target must run; its pins are
    /// those of its own release, read from its /etc/os-release.
    #[arg(long, value_name = "CODENAME")]
    release: Option<String>,
}

impl WhitelistNode {
    fn as_node(&self) -> commands::whitelist::Node<'_> {
        commands::whitelist::Node {
            root: self.root.as_ref(),
            fqdn: self.fqdn.as_deref(),
            roles: &self.roles,
            release: self.release.as_deref(),
        }
    }
}

#[derive(Args)]
struct FingerprintArgs {
    /// Fingerprint this directory tree instead of the running system.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print one line per managed resource, sorted, then the fingerprint.
    #[arg(long)]
    explain: bool,
    /// Print {fingerprint, parts: [{resource, part}]} as JSON.
    #[arg(long)]
    json: bool,
    /// Take the managed resources from these roles' policy, not the last run (repeatable).
    #[arg(long = "role", value_name = "R")]
    roles: Vec<String>,
    /// With --role: the node's name (default: the last run's, else the target's hostname).
    #[arg(long, requires = "roles")]
    fqdn: Option<String>,
}

#[derive(Args)]
struct FleetTarget {
    /// The inventory of hosts (inventory.toml).
    #[arg(long, value_name = "FILE", default_value = "inventory.toml")]
    inventory: PathBuf,
    /// Only hosts whose fqdn (or a role) matches this glob.
    #[arg(long, value_name = "GLOB")]
    hosts: Option<String>,
    /// Accept and record the key of a host not yet in known_hosts (first contact).
    #[arg(long)]
    accept_new_host_keys: bool,
    #[arg(long)]
    json: bool,
    /// The ssh client to run.
    #[arg(
        long,
        env = "KILN_SSH",
        value_name = "PROGRAM",
        default_value = "ssh",
        hide = true
    )]
    ssh: PathBuf,
    /// Where ssh master sockets live (default: /tmp/kiln-ssh-UID).
    #[arg(long, env = "KILN_SSH_CONTROL_DIR", value_name = "DIR", hide = true)]
    ssh_control_dir: Option<PathBuf>,
    /// How long an ssh connection may take to come up (seconds, or 10s).
    #[arg(
        long,
        env = "KILN_SSH_CONNECT_TIMEOUT",
        value_name = "DURATION",
        default_value = "10",
        value_parser = duration
    )]
    connect_timeout: Duration,
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Converge the hosts: canaries first, then batches; stop at the first failure.
    Converge {
        #[command(flatten)]
        target: FleetTarget,
        /// Converge this many canary hosts first (hosts with canary = true or the canary role count first).
        #[arg(long, value_name = "N")]
        canary: Option<usize>,
        /// Hosts per batch after the canaries: a number or a percentage (25%).
        #[arg(long, value_name = "N|N%")]
        batch: Option<String>,
        /// Hosts converged at the same time inside a batch.
        #[arg(long, value_name = "N", default_value_t = 16)]
        parallel: usize,
        /// Failures tolerated before the rollout stops (a push hold).
        #[arg(long, value_name = "N", default_value_t = 0)]
        max_fail: usize,
        /// Show what each host would change, and change nothing.
        #[arg(long)]
        why_run: bool,
        #[command(flatten)]
        signing: Signing,
        /// The kiln binary the hosts get (default: this one).
        #[arg(long, env = "KILN_FLEET_BINARY", value_name = "FILE", hide = true)]
        binary: Option<PathBuf>,
    },
    /// Each host's last run, its fingerprint, and drift between hosts of the same roles.
    Status {
        #[command(flatten)]
        target: FleetTarget,
    },
    /// Write the signed policy bundle (and its .sha256 and .sig) for agents to fetch.
    Bundle {
        /// The directory to publish into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The name of the current bundle in DIR.
        #[arg(long, default_value = "bundle.tar")]
        name: String,
        /// Carry each host's node file (fqdn, roles, attributes) from this inventory.
        #[arg(long, value_name = "FILE")]
        inventory: Option<PathBuf>,
        /// The bundle's serial (default: its UTC build time, YYYYMMDDhhmmssmmm); hosts refuse a serial older than the one they converged.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
        serial: Option<u64>,
        #[command(flatten)]
        signing: Signing,
    },
}

#[derive(Args)]
struct Signing {
    /// The ed25519 key (OpenSSH format) that signs the bundle (for fleet converge, default: the inventory's signing_key).
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// Send the bundle unsigned: hosts then converge it without checking a signature.
    #[arg(long, conflicts_with = "signing_key")]
    allow_unsigned: bool,
}

#[derive(Args)]
struct AgentArgs {
    /// Time between runs (10m, 30s, 1h).
    #[arg(long, default_value = "10m", value_parser = duration)]
    interval: Duration,
    /// A random delay up to this long before each run.
    #[arg(long, default_value = "2m", value_parser = duration)]
    splay: Duration,
    /// A policy repository directory, a bundle file, or an http:// or https:// URL of a bundle (verified against its signature, URL.sig).
    #[arg(long, value_name = "DIR|FILE|URL")]
    source: Option<String>,
    /// The OpenSSH allowed_signers file a bundle's signature is checked against.
    #[arg(long, value_name = "FILE", default_value = crate::trust::ALLOWED_SIGNERS)]
    allowed_signers: PathBuf,
    /// Roles of this host (repeatable; default: the roles of the last run).
    #[arg(long = "role", value_name = "R")]
    roles: Vec<String>,
    #[arg(long)]
    fqdn: Option<String>,
    /// Converge once and exit.
    #[arg(long)]
    once: bool,
    /// Send run time, changed and failed to this StatsD address (UDP host:port).
    #[arg(long, value_name = "ADDR")]
    statsd: Option<String>,
    /// Where the agent keeps fetched bundles.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kiln/agent")]
    state_dir: PathBuf,
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
    /// For image builds and tests, never production: a pinned version that no
    /// source offers any more is replaced by the version the sources offer
    /// (with its siblings), held, warned about and recorded in the report.
    #[arg(long)]
    substitute_vanished_pins: bool,
    #[command(flatten)]
    lock: LockArgs,
}

#[derive(Args)]
struct LockArgs {
    /// How long to wait for another kiln run on the target to finish (seconds, or 30s, 5m).
    #[arg(
        long = "lock-timeout",
        env = "KILN_LOCK_TIMEOUT",
        value_name = "DURATION",
        default_value = "60",
        value_parser = duration
    )]
    lock_timeout: Duration,
}

/// A duration as people write it (`30s`, `10m`, `1h 30m`, `250ms`), or bare seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?}: {e}; expected a duration such as 30s, 10m, 1h"))
}

/// `--strict-pins` of dev VMs and `kiln test`, which substitute by default.
fn pin_mode(strict: bool) -> crate::engine::PinMode {
    if strict {
        crate::engine::PinMode::Strict
    } else {
        crate::engine::PinMode::Substitute
    }
}

/// Parses arguments, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    let mut cli = Cli::parse();
    cli.repo = default_repo(cli.repo);
    let result = match cli.command {
        Command::Converge(a) => commands::converge::run(
            &Converge {
                repo: cli.repo,
                roles: a.roles,
                run_list: a.run_list,
                fqdn: a.fqdn,
                node: a.node,
                size: a.size,
                root: a.root,
                why_run: a.why_run,
                lock_timeout: a.lock.lock_timeout,
                test_secrets: false,
                attributes: toml::Table::new(),
                pins: if a.substitute_vanished_pins {
                    crate::engine::PinMode::Substitute
                } else {
                    crate::engine::PinMode::Strict
                },
            },
            a.json,
            a.detailed_exitcodes,
        ),
        Command::Check { inventory } => commands::check::run(&cli.repo, inventory.as_deref()),
        Command::Test(t) if t.print_base_root => {
            commands::test::print_base_root(t.releases.first().map(String::as_str))
        }
        Command::Test(t) => commands::test::run(commands::test::TestArgs {
            repo: cli.repo,
            roles: t.roles,
            releases: t.releases,
            junit: t.junit,
            json: t.json,
            keep: t.keep,
            fqdn: t.fqdn,
            size: t.size,
            timeout: Duration::from_secs(t.timeout),
            pins: pin_mode(t.strict_pins),
        }),
        Command::Sandbox {
            root,
            role,
            fqdn,
            size,
            strict_pins,
        } => Ok(crate::testing::inside::run(
            crate::testing::inside::InsideArgs {
                root,
                repo: cli.repo,
                role,
                fqdn,
                size,
                pins: pin_mode(strict_pins),
            },
        )),
        Command::RootExec {
            root,
            read_only,
            argv,
        } => Ok(crate::platform::sandbox::exec::run(&root, read_only, &argv)),
        Command::Devvm(d) => {
            if let Some(dir) = d.vms_dir {
                crate::devvm::paths::set_vms_dir(dir);
            }
            commands::devvm::run(&cli.repo, d.command)
        }
        Command::Secret(s) => {
            let ctx = |inventory: Option<PathBuf>| commands::secret::Ctx {
                repo: cli.repo.clone(),
                inventory,
            };
            match s {
                SecretCommand::Set { name, file, inv } => {
                    commands::secret::set(&ctx(inv.inventory), &name, file.as_deref())
                }
                SecretCommand::Show { name, id } => {
                    commands::secret::show(&ctx(None), &name, id.identity.as_deref())
                }
                SecretCommand::List { inv } => commands::secret::list(&ctx(inv.inventory)),
                SecretCommand::Rekey { id, inv } => {
                    commands::secret::rekey(&ctx(inv.inventory), id.identity.as_deref())
                }
            }
        }
        Command::Fingerprint(a) => commands::fingerprint::run(commands::fingerprint::Fingerprint {
            repo: cli.repo,
            root: a.root,
            roles: a.roles,
            fqdn: a.fqdn,
            explain: a.explain,
            json: a.json,
        }),
        Command::Fleet(f) => match f {
            FleetCommand::Converge {
                target,
                canary,
                batch,
                parallel,
                max_fail,
                why_run,
                signing,
                binary,
            } => commands::fleet::converge(commands::fleet::FleetConverge {
                common: fleet_common(cli.repo, target),
                canary,
                batch,
                parallel,
                max_fail,
                why_run,
                signing_key: signing.signing_key,
                allow_unsigned: signing.allow_unsigned,
                binary,
            }),
            FleetCommand::Status { target } => {
                commands::fleet::status(fleet_common(cli.repo, target))
            }
            FleetCommand::Bundle {
                out,
                name,
                inventory,
                serial,
                signing,
            } => commands::fleet::bundle(commands::fleet::Publish {
                repo: &cli.repo,
                out: &out,
                name: &name,
                inventory: inventory.as_deref(),
                serial,
                key: signing.signing_key.as_deref(),
                allow_unsigned: signing.allow_unsigned,
            }),
        },
        Command::Agent(a) => commands::agent::run(commands::agent::Agent {
            repo: cli.repo,
            interval: a.interval,
            splay: a.splay,
            source: a.source,
            roles: a.roles,
            fqdn: a.fqdn,
            once: a.once,
            statsd: a.statsd,
            state_dir: a.state_dir,
            allowed_signers: a.allowed_signers,
        }),
        Command::VerifyBundle {
            file,
            signature,
            allowed_signers,
            first_contact,
        } => {
            let sig = signature
                .unwrap_or_else(|| PathBuf::from(crate::trust::sig_path(&file.to_string_lossy())));
            crate::trust::verify_command(&file, &sig, &allowed_signers, first_contact)
        }
        Command::UnpackBundle { file, dest } => commands::fleet::unpack_bundle(&file, &dest),
        Command::Host => commands::fleet::host(),
        Command::Verify {
            roles,
            fqdn,
            root,
            json,
            converge,
            why_run,
            node,
            size,
            lock,
        } => commands::verify::run(commands::verify::Verify {
            repo: cli.repo,
            roles,
            fqdn,
            root,
            json,
            converge,
            why_run,
            node,
            size,
            lock_timeout: lock.lock_timeout,
        }),
        Command::Whitelist(w) => match w {
            WhitelistCommand::Explain {
                fqdn,
                roles,
                release,
                siblings,
                root,
                json,
            } => commands::whitelist::explain(
                &cli.repo,
                fqdn.as_deref(),
                &roles,
                release.as_deref(),
                siblings.then(|| match &root {
                    Some(r) => crate::platform::target::Target::at_root_read_only(r),
                    None => crate::platform::target::Target::host(),
                }),
                json,
            ),
            WhitelistCommand::Promote { rollout } => {
                commands::whitelist::promote(&cli.repo, &rollout)
            }
            WhitelistCommand::Audit { node, json } => {
                commands::whitelist::audit(&cli.repo, &node.as_node(), json)
            }
            WhitelistCommand::Outdated { node, json } => {
                commands::whitelist::outdated(&cli.repo, &node.as_node(), json)
            }
            WhitelistCommand::Mirror {
                out,
                roles,
                release,
            } => commands::whitelist::mirror(&cli.repo, &out, &roles, release.as_deref()),
            WhitelistCommand::Stage {
                name,
                packages,
                hosts,
                rollout_roles,
                node,
            } => commands::whitelist::stage(
                &cli.repo,
                &node.as_node(),
                &commands::whitelist::Stage {
                    name: &name,
                    packages: &packages,
                    hosts: &hosts,
                    rollout_roles: &rollout_roles,
                },
            ),
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

fn fleet_common(repo: PathBuf, t: FleetTarget) -> commands::fleet::Common {
    commands::fleet::Common {
        repo,
        inventory: t.inventory,
        hosts: t.hosts,
        accept_new_host_keys: t.accept_new_host_keys,
        json: t.json,
        ssh: crate::fleet::ssh::Client {
            program: t.ssh,
            control_dir: t.ssh_control_dir,
            connect_timeout: t.connect_timeout,
        },
    }
}

/// Where the policy comes from when `--repo` is not given and the current
/// directory is no repository: the copy installed on the host (dev VM
/// images and fleet hosts keep it in /etc/kiln/policy).
fn default_repo(repo: PathBuf) -> PathBuf {
    const INSTALLED: &str = "/etc/kiln/policy";
    let is_repo = |d: &std::path::Path| d.join("roles").is_dir() || d.join("cookbooks").is_dir();
    if repo == std::path::Path::new(".")
        && !is_repo(&repo)
        && is_repo(std::path::Path::new(INSTALLED))
    {
        PathBuf::from(INSTALLED)
    } else {
        repo
    }
}

fn report_error(e: &Error) {
    let text = e.to_string();
    let text = crate::text::terminal_safe(&text);
    match e {
        Error::Policy(_) => eprintln!("{text}"),
        _ => eprintln!("error: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_program_keeps_its_arguments_whole() {
        let root = std::path::Path::new("/srv/tree");
        let mut line = vec![std::ffi::OsString::from("kiln")];
        line.extend(crate::platform::sandbox::exec::args(
            root,
            true,
            &["apt-cache", "--root", "-x", "--", "a b"],
        ));
        match Cli::try_parse_from(line).unwrap().command {
            Command::RootExec {
                root: r,
                read_only,
                argv,
            } => {
                assert_eq!(r, root);
                assert!(read_only);
                assert_eq!(argv, ["apt-cache", "--root", "-x", "--", "a b"]);
            }
            _ => panic!("not __root-exec"),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("0").unwrap(), Duration::ZERO);
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(duration("5x").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

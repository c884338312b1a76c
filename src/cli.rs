//! The command line: clap types live here and nowhere else. Each command's
//! arguments turn into the options of its `commands::*` function, which
//! does the work and renders it; `main` only parses and dispatches.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::devvm::image::ImageSpec;
use crate::devvm::vm::UpRequest;
use crate::engine::Converge;
use crate::error::Error;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Converge hosts to a policy repository of roles, cookbooks and a pinned package whitelist"
)]
struct Cli {
    #[command(flatten)]
    repo: RepoArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct RepoArg {
    /// The policy repository (default: the current directory, else the
    /// copy installed in /etc/kiln/policy).
    #[arg(long, global = true, default_value = ".", value_name = "DIR")]
    repo: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Converge a target to its roles and run list.
    Converge(ConvergeArgs),
    /// Validate the whole repository without touching any host.
    Check(CheckArgs),
    /// Converge each role twice in a throwaway Debian root and run its verify checks.
    Test(TestArgs),
    /// The inside of a `kiln test` target (internal).
    #[command(name = "__sandbox", hide = true)]
    Sandbox(SandboxArgs),
    /// One program of a `--root` tree, run in a sandbox (internal).
    #[command(name = "__root-exec", hide = true)]
    RootExec(RootExecArgs),
    /// Roll the policy out to an inventory of hosts over SSH, and see their state.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Converge this host on an interval, from a repository or a published bundle.
    Agent(AgentArgs),
    /// Run the verify checks of roles on this target (fleet health checks).
    #[command(hide = true)]
    Verify(VerifyArgs),
    /// Check a bundle's signature against an allowed_signers file (what fleet hosts run before unpacking).
    #[command(name = "verify-bundle", hide = true)]
    VerifyBundle(VerifyBundleArgs),
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
    /// Keep the fleet's run reports (sent with --report-to) and answer queries over HTTP.
    Server(ServerArgs),
    /// Ask `kiln server` about the fleet: hosts, packages, runs.
    Report(ReportArgs),
}

#[derive(Args)]
struct ServerArgs {
    /// The address to listen on (HTTP, or HTTPS with --tls-cert and --tls-key).
    #[arg(long, value_name = "ADDR", default_value = crate::server::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Serve HTTPS with this certificate (PEM, its chain after it).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The store: a SQLite file (created with its directory), or a
    /// PostgreSQL database as postgres://USER@HOST[:PORT]/DB, which several
    /// servers may share (TLS as libpq's ?sslmode= and &sslrootcert=FILE).
    #[arg(long, value_name = "PATH|URL", default_value = crate::server::DEFAULT_DATABASE)]
    database: String,
    /// The inventory whose known_hosts holds the keys reports must be signed with.
    #[arg(long, value_name = "FILE", default_value = "inventory.toml")]
    inventory: PathBuf,
    /// A file holding the bearer token that reads must present.
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// Runs older than this many days are pruned (each host's latest is kept).
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    retention_days: u64,
    /// The largest report body taken, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = crate::server::DEFAULT_MAX_BODY)]
    max_body: usize,
    /// A host that sent no interval is stale after this long without a report.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = duration)]
    stale_after: Duration,
}

#[derive(Args)]
struct ReportArgs {
    /// The kiln server (http://HOST:PORT).
    #[arg(long, env = "KILN_SERVER", value_name = "URL")]
    server: String,
    /// The file holding the server's read token.
    #[arg(long, env = "KILN_TOKEN_FILE", value_name = "FILE")]
    token_file: PathBuf,
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    question: ReportQuestion,
}

#[derive(Subcommand)]
enum ReportQuestion {
    /// Each host as its latest run left it.
    Hosts {
        /// Only hosts with this role.
        #[arg(long)]
        role: Option<String>,
        /// Only hosts on this Debian release (codename).
        #[arg(long, value_name = "CODENAME")]
        release: Option<String>,
        /// Only hosts whose latest run failed.
        #[arg(long)]
        failed: bool,
        /// Only hosts with no report within twice their interval (the server's --stale-after without one).
        #[arg(long)]
        stale: bool,
    },
    /// Which hosts have a package, at which version, held or not.
    Package {
        name: String,
        #[arg(long)]
        version: Option<String>,
    },
    /// A host's runs and what each changed.
    Runs {
        fqdn: String,
        /// Only runs of this last while (24h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        since: Option<Duration>,
    },
    /// Hosts whose fingerprint differs from most hosts of their roles and
    /// release: which parts, and since which run.
    Drift {
        #[arg(long)]
        role: Option<String>,
    },
    /// The hosts a whitelist rollout matches (--repo), and which report its versions.
    Rollout { name: String },
    /// Reports the server refused, counted by reason.
    Refusals,
}

impl ReportArgs {
    fn run(self, repo: PathBuf) -> Result<i32, Error> {
        use commands::report::Question;
        let q = match self.question {
            ReportQuestion::Hosts {
                role,
                release,
                failed,
                stale,
            } => Question::Hosts(crate::store::HostQuery {
                role,
                release,
                failed,
                stale,
            }),
            ReportQuestion::Package { name, version } => Question::Package { name, version },
            ReportQuestion::Runs { fqdn, since } => Question::Runs { fqdn, since },
            ReportQuestion::Drift { role } => Question::Drift { role },
            ReportQuestion::Rollout { name } => Question::Rollout { name, repo },
            ReportQuestion::Refusals => Question::Refusals,
        };
        let server = commands::report::Server {
            url: self.server,
            token_file: self.token_file,
            json: self.json,
        };
        commands::report::run(&server, q)
    }
}

impl ServerArgs {
    /// Parsed here, not by clap, whose message would quote the URL with
    /// its password.
    fn options(self, repo: PathBuf) -> Result<crate::server::Options, crate::store::DatabaseError> {
        Ok(crate::server::Options {
            repo: Some(repo),
            listen: self.listen,
            database: self.database.parse()?,
            inventory: self.inventory,
            token_file: self.token_file,
            retention_days: self.retention_days,
            max_body: self.max_body,
            stale_after: self.stale_after,
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| crate::server::TlsFiles { cert, key }),
        })
    }
}

#[derive(Args)]
struct CheckArgs {
    /// An inventory whose hosts must each be able to read the secrets they use
    /// (default: the one secrets/recipients.toml names, else ./inventory.toml if any).
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
}

#[derive(Args)]
struct SandboxArgs {
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
    /// Where this part of the converge stops and what it starts with.
    #[arg(long)]
    part: Option<PathBuf>,
}

impl SandboxArgs {
    fn options(self, repo: PathBuf) -> crate::testing::inside::InsideArgs {
        crate::testing::inside::InsideArgs {
            repo,
            root: self.root,
            role: self.role,
            fqdn: self.fqdn,
            size: self.size,
            pins: pin_mode(self.strict_pins),
            part: self.part,
        }
    }
}

#[derive(Args)]
struct RootExecArgs {
    #[arg(long)]
    root: PathBuf,
    #[arg(long)]
    read_only: bool,
    #[arg(last = true, required = true)]
    argv: Vec<std::ffi::OsString>,
}

#[derive(Args)]
struct VerifyArgs {
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
}

impl VerifyArgs {
    fn options(self, repo: PathBuf) -> commands::verify::Verify {
        commands::verify::Verify {
            repo,
            roles: self.roles,
            fqdn: self.fqdn,
            root: self.root,
            json: self.json,
            converge: self.converge,
            why_run: self.why_run,
            node: self.node,
            size: self.size,
            lock_timeout: self.lock.lock_timeout,
        }
    }
}

#[derive(Args)]
struct VerifyBundleArgs {
    file: PathBuf,
    /// The SSHSIG signature (default: FILE.sig).
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    #[arg(long, value_name = "FILE", default_value = crate::trust::ALLOWED_SIGNERS)]
    allowed_signers: PathBuf,
    /// With no allowed_signers file yet: start from the bundle's kiln cookbook copy.
    #[arg(long)]
    first_contact: bool,
}

impl From<VerifyBundleArgs> for commands::verify::Bundle {
    fn from(a: VerifyBundleArgs) -> Self {
        commands::verify::Bundle {
            file: a.file,
            signature: a.signature,
            allowed_signers: a.allowed_signers,
            first_contact: a.first_contact,
        }
    }
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
    command: DevvmCommand,
}

#[derive(Args)]
struct ImageArgs {
    /// The role the VM converges (it defines the sizes). Default: what an
    /// existing VM was made with, else devvm.
    #[arg(long)]
    role: Option<String>,
    /// A size of the role: small, medium, large. Default: an existing VM's,
    /// else small.
    #[arg(long)]
    size: Option<String>,
    /// The Debian release (codename) the VM runs; it must be one the
    /// whitelist pins. Default: an existing VM's, else trixie.
    #[arg(long)]
    release: Option<String>,
    /// Refuse a pinned version that no source offers any more, as production
    /// does, instead of taking what the sources offer (with a warning).
    #[arg(long)]
    strict_pins: bool,
    /// Converge a new image from the base root, neither using nor keeping
    /// checkpoints (a cached image still answers unless --force).
    #[arg(long)]
    no_cache: bool,
}

impl ImageArgs {
    fn spec(self, repo: PathBuf) -> ImageSpec {
        ImageSpec {
            repo,
            role: self.role,
            size: self.size,
            release: self.release,
            strict_pins: self.strict_pins,
            no_cache: self.no_cache,
        }
    }
}

#[derive(Subcommand)]
enum DevvmCommand {
    /// Build (or find in the cache) the disk image of a role and size.
    Build {
        #[command(flatten)]
        image: ImageArgs,
        /// Rebuild even when the cache has an image for these inputs.
        #[arg(long)]
        force: bool,
    },
    /// Boot a VM (building its image first if needed) and wait until it
    /// serves: ssh and the URL answer. A second `up` of the same VM waits
    /// for the first.
    Up(UpArgs),
    /// ssh into a running VM (extra arguments are the remote command).
    Ssh {
        #[arg(default_value = commands::devvm::DEFAULT_NAME)]
        name: String,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// State (building, booting, running, stopped, or failed and why),
    /// release, ports, accel, uptime, app directory and fingerprint of a VM.
    Status {
        #[arg(default_value = commands::devvm::DEFAULT_NAME)]
        name: String,
    },
    /// Shut a VM down cleanly (ACPI), killing it after a timeout.
    Down {
        #[arg(default_value = commands::devvm::DEFAULT_NAME)]
        name: String,
        #[arg(long, value_name = "SECS", default_value_t = 90)]
        timeout: u64,
    },
    /// Shut a VM down and remove its disk and state. Its own app directory
    /// (the default one, under $XDG_DATA_HOME/kiln/devvm/NAME) is kept.
    Destroy {
        #[arg(default_value = commands::devvm::DEFAULT_NAME)]
        name: String,
        #[arg(long, value_name = "SECS", default_value_t = 90)]
        timeout: u64,
        /// Remove the VM's own app directory too (never an --app directory
        /// or the repository's app/).
        #[arg(long)]
        purge: bool,
    },
    /// The VMs and the cached images.
    List,
    /// Package the image as a vagrant-libvirt box and write vagrant/Vagrantfile.
    Box {
        #[command(flatten)]
        image: ImageArgs,
        /// The VM whose role, size and release the box takes where not given.
        #[arg(long, value_name = "NAME", default_value = commands::devvm::DEFAULT_NAME)]
        vm: String,
    },
}

#[derive(Args)]
struct UpArgs {
    /// The VM's name.
    #[arg(default_value = commands::devvm::DEFAULT_NAME)]
    name: String,
    #[command(flatten)]
    image: ImageArgs,
    /// kvm, tcg, or auto (KVM when a probe boot shows it works, else TCG).
    #[arg(long, default_value = "auto")]
    accel: crate::devvm::accel::Choice,
    /// Host port for ssh (a taken one picks another; default 2222).
    #[arg(long)]
    ssh_port: Option<u16>,
    /// Host port for http (a taken one picks another; default 8080).
    #[arg(long)]
    http_port: Option<u16>,
    /// The app checkout shared into the VM at the app's docroot. Default:
    /// what the VM had, else the repository's app/, else the VM's own
    /// $XDG_DATA_HOME/kiln/devvm/NAME/app (~/.local/share/...), which
    /// destroy keeps.
    #[arg(long, value_name = "DIR")]
    app: Option<PathBuf>,
    /// Seconds the VM gets to answer and finish booting (default 900 under TCG, 300 under KVM).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Start the VM over from the current image (rebuilt when the policy
    /// changed): the image is built first, then a running VM is stopped,
    /// its disk made anew and booted; its app directory is kept. How a VM
    /// takes a changed policy, or another role, size or release
    /// (`--release trixie --recreate`); without it an existing VM keeps
    /// the image its disk was made on.
    #[arg(long)]
    recreate: bool,
}

impl DevvmCommand {
    fn options(self, repo: PathBuf) -> commands::devvm::Devvm {
        use commands::devvm::Devvm;
        match self {
            DevvmCommand::Build { image, force } => {
                Devvm::Build(image.spec(repo).request(None, force))
            }
            DevvmCommand::Up(u) => Devvm::Up(UpRequest {
                name: u.name,
                image: u.image.spec(repo),
                accel: u.accel,
                ssh_port: u.ssh_port,
                http_port: u.http_port,
                app_dir: u.app,
                timeout: u.timeout.map(Duration::from_secs),
                recreate: u.recreate,
            }),
            DevvmCommand::Ssh { name, command } => Devvm::Ssh { name, command },
            DevvmCommand::Status { name } => Devvm::Status { name },
            DevvmCommand::Down { name, timeout } => Devvm::Down {
                name,
                timeout: Duration::from_secs(timeout),
            },
            DevvmCommand::Destroy {
                name,
                timeout,
                purge,
            } => Devvm::Destroy {
                name,
                timeout: Duration::from_secs(timeout),
                purge,
            },
            DevvmCommand::List => Devvm::List,
            DevvmCommand::Box { image, vm } => Devvm::Box {
                image: image.spec(repo),
                vm,
            },
        }
    }
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
    /// Converge every role from the base root, neither using nor keeping
    /// checkpoints.
    #[arg(long)]
    no_cache: bool,
    /// How many roles to test at once (default: the number of cores; 1
    /// tests them one after another).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<std::num::NonZeroUsize>,
    /// Print the cached base root's path (building it if missing) and exit:
    /// for benchmarks, which converge the same root the tests do.
    #[arg(long, hide = true)]
    print_base_root: bool,
}

impl TestArgs {
    fn options(self, repo: PathBuf) -> commands::test::TestArgs {
        commands::test::TestArgs {
            repo,
            roles: self.roles,
            releases: self.releases,
            junit: self.junit,
            json: self.json,
            keep: self.keep,
            fqdn: self.fqdn,
            size: self.size,
            timeout: Duration::from_secs(self.timeout),
            pins: pin_mode(self.strict_pins),
            no_cache: self.no_cache,
            jobs: self
                .jobs
                .or_else(|| std::thread::available_parallelism().ok())
                .map_or(1, std::num::NonZeroUsize::get),
        }
    }
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
        /// Instead of pins: which hosts of --inventory this rollout reaches, and why.
        #[arg(long, value_name = "NAME", requires = "inventory", conflicts_with_all = ["fqdn", "roles", "siblings"])]
        rollout: Option<String>,
        /// With --rollout: the fleet's inventory.toml.
        #[arg(long, value_name = "FILE", requires = "rollout")]
        inventory: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Move a rollout's versions into the base pins, its attributes and
    /// recipes into a role or cookbook, and remove the rollout.
    Promote {
        rollout: String,
        /// Where its attributes and recipes go: role:NAME
        /// (override_attributes, run_list) or cookbook:NAME (attributes.toml).
        #[arg(long, value_name = "role:NAME|cookbook:NAME")]
        to: Option<crate::policy::rollout_edit::Destination>,
    },
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
        /// A stable share (0-100) of the hosts --hosts and --roles allow
        /// (alone: of every host); hosts --hosts names exactly are in anyway.
        #[arg(long, value_name = "N")]
        percent: Option<i64>,
        /// An attribute the hosts in the rollout get, e.g.
        /// mariadb.innodb_buffer_pool_mb=512; no target is read then.
        #[arg(long = "attribute", value_name = "KEY=VALUE")]
        attributes: Vec<String>,
        /// A recipe appended to the run lists of the hosts in the rollout.
        #[arg(long = "recipe", value_name = "recipe[COOKBOOK::RECIPE]")]
        run_list: Vec<String>,
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

impl FingerprintArgs {
    fn options(self, repo: PathBuf) -> commands::fingerprint::Fingerprint {
        commands::fingerprint::Fingerprint {
            repo,
            root: self.root,
            roles: self.roles,
            fqdn: self.fqdn,
            explain: self.explain,
            json: self.json,
        }
    }
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
        /// Only the hosts in this rollout of the whitelist; those its
        /// hosts list names are the canaries.
        #[arg(long, value_name = "NAME")]
        rollout: Option<String>,
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
        /// Each host sends its run's report, signed with its host key, to
        /// this kiln server (default: the inventory's report_to).
        #[arg(long, value_name = "URL")]
        report_to: Option<String>,
    },
    /// Each host's last run, its fingerprint, and drift between hosts of the same roles.
    Status {
        #[command(flatten)]
        target: FleetTarget,
        /// Answer from this kiln server's report store instead of from
        /// each host over ssh.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// The file holding the server's read token (with --server).
        #[arg(
            long,
            env = "KILN_TOKEN_FILE",
            value_name = "FILE",
            requires = "server"
        )]
        token_file: Option<PathBuf>,
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
    /// Send each run's report (with its verify checks), signed with the host
    /// key, to this `kiln server`; undelivered ones wait in /var/lib/kiln/outbox.
    #[arg(long, value_name = "URL")]
    report_to: Option<String>,
    /// Where the agent keeps fetched bundles.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kiln/agent")]
    state_dir: PathBuf,
}

impl AgentArgs {
    fn options(self, repo: PathBuf) -> commands::agent::Agent {
        commands::agent::Agent {
            repo,
            interval: self.interval,
            splay: self.splay,
            source: self.source,
            roles: self.roles,
            fqdn: self.fqdn,
            once: self.once,
            statsd: self.statsd,
            report_to: self.report_to,
            state_dir: self.state_dir,
            allowed_signers: self.allowed_signers,
        }
    }
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
    /// Print the run report as JSON (with --why-run, the plan too).
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
    /// After a real run, send its report, signed with the host key, to this
    /// `kiln server` (http://HOST:PORT); one it cannot take now waits in
    /// /var/lib/kiln/outbox for a later run. Never fails the converge.
    #[arg(long, value_name = "URL")]
    report_to: Option<String>,
    #[command(flatten)]
    lock: LockArgs,
}

impl ConvergeArgs {
    fn run(self, repo: PathBuf) -> Result<i32, Error> {
        let a = self;
        commands::converge::run(
            &Converge {
                repo,
                roles: a.roles,
                run_list: a.run_list,
                fqdn: a.fqdn,
                node: a.node,
                size: a.size,
                root: a.root,
                why_run: a.why_run,
                lock_timeout: a.lock.lock_timeout,
                test_secrets: false,
                test_key: None,
                attributes: toml::Table::new(),
                pins: if a.substitute_vanished_pins {
                    crate::engine::PinMode::Substitute
                } else {
                    crate::engine::PinMode::Strict
                },
                // A user's host or tree: never without dpkg's syncs.
                durability: crate::platform::target::Durability::Durable,
            },
            a.json,
            a.detailed_exitcodes,
            a.report_to.as_deref(),
        )
    }
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

/// A value given for a duration option that is no duration; clap names
/// the option.
#[derive(Debug, thiserror::Error)]
enum BadDuration {
    #[error("{text:?}: {source}")]
    Seconds {
        text: String,
        source: std::num::ParseIntError,
    },
    #[error("{text:?}: {source}; expected a duration such as 30s, 10m, 1h")]
    Written {
        text: String,
        source: humantime::DurationError,
    },
}

/// A duration as people write it (`30s`, `10m`, `1h 30m`, `250ms`), or bare seconds.
fn duration(s: &str) -> Result<Duration, BadDuration> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|source| BadDuration::Seconds {
                text: s.to_string(),
                source,
            });
    }
    humantime::parse_duration(s).map_err(|source| BadDuration::Written {
        text: s.to_string(),
        source,
    })
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
    let cli = converge_alone(std::env::args_os()).unwrap_or_else(Cli::parse);
    match cli.command.run(commands::repo_dir(cli.repo.repo)) {
        Ok(code) => code,
        Err(e) => {
            report_error(&e);
            e.exit_code()
        }
    }
}

/// `kiln converge ...` parsed by a command that knows converge alone:
/// clap otherwise builds every command's arguments first, about a tenth of
/// a small no-op's CPU. Only a clean parse is taken: help, a version or an
/// error goes to the whole command, so every message stays its own.
fn converge_alone(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<Cli> {
    use clap::FromArgMatches;
    let args: Vec<_> = args.into_iter().collect();
    if args.get(1).is_none_or(|a| a != "converge") {
        return None;
    }
    let matches = converge_command().try_get_matches_from(args).ok()?;
    Cli::from_arg_matches(&matches).ok()
}

fn converge_command() -> clap::Command {
    RepoArg::augment_args(clap::Command::new("kiln"))
        .subcommand(ConvergeArgs::augment_args(clap::Command::new("converge")))
}

impl Command {
    fn run(self, repo: PathBuf) -> Result<i32, Error> {
        match self {
            Command::Converge(a) => a.run(repo),
            Command::Check(a) => commands::check::run(&repo, a.inventory.as_deref()),
            Command::Test(t) if t.print_base_root => {
                commands::test::print_base_root(t.releases.first().map(String::as_str))
            }
            Command::Test(t) => commands::test::run(t.options(repo)),
            Command::Sandbox(a) => commands::test::inside(a.options(repo)),
            Command::RootExec(a) => commands::root_exec::run(&a.root, a.read_only, &a.argv),
            Command::Devvm(d) => commands::devvm::run(d.vms_dir, d.command.options(repo)),
            Command::Secret(s) => s.run(repo),
            Command::Fingerprint(a) => commands::fingerprint::run(a.options(repo)),
            Command::Fleet(f) => f.run(repo),
            Command::Agent(a) => commands::agent::run(a.options(repo)),
            Command::VerifyBundle(a) => commands::verify::bundle(a.into()),
            Command::Host => commands::fleet::host(),
            Command::Verify(a) => commands::verify::run(a.options(repo)),
            Command::Whitelist(w) => w.run(repo),
            Command::Server(a) => {
                let opts = a.options(repo).map_err(|e| Error::Usage(e.to_string()))?;
                commands::server::run(opts)
            }
            Command::Report(a) => a.run(repo),
        }
    }
}

impl SecretCommand {
    fn run(self, repo: PathBuf) -> Result<i32, Error> {
        let ctx = |inventory: Option<PathBuf>| commands::secret::Ctx {
            repo: repo.clone(),
            inventory,
        };
        match self {
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
}

impl FleetCommand {
    fn run(self, repo: PathBuf) -> Result<i32, Error> {
        match self {
            FleetCommand::Converge {
                target,
                canary,
                rollout,
                batch,
                parallel,
                max_fail,
                why_run,
                signing,
                binary,
                report_to,
            } => commands::fleet::converge(commands::fleet::FleetConverge {
                common: fleet_common(repo, target),
                rollout,
                canary,
                batch,
                parallel,
                max_fail,
                why_run,
                signing_key: signing.signing_key,
                allow_unsigned: signing.allow_unsigned,
                binary,
                report_to,
            }),
            FleetCommand::Status {
                target,
                server,
                token_file,
            } => {
                let store = match (server, token_file) {
                    (Some(url), Some(token_file)) => {
                        Some(commands::fleet::FromStore { url, token_file })
                    }
                    (Some(_), None) => {
                        return Err(Error::Usage(
                            "fleet status --server needs --token-file FILE (or KILN_TOKEN_FILE), the server's read token".into(),
                        ));
                    }
                    (None, _) => None,
                };
                commands::fleet::status(fleet_common(repo, target), store)
            }
            FleetCommand::Bundle {
                out,
                name,
                inventory,
                serial,
                signing,
            } => commands::fleet::bundle(commands::fleet::Publish {
                repo: &repo,
                out: &out,
                name: &name,
                inventory: inventory.as_deref(),
                serial,
                key: signing.signing_key.as_deref(),
                allow_unsigned: signing.allow_unsigned,
            }),
        }
    }
}

impl WhitelistCommand {
    fn run(self, repo: PathBuf) -> Result<i32, Error> {
        match self {
            WhitelistCommand::Explain {
                rollout: Some(rollout),
                inventory: Some(inventory),
                release,
                json,
                ..
            } => commands::whitelist::explain_rollout(
                &repo,
                &rollout,
                &inventory,
                release.as_deref(),
                json,
            ),
            WhitelistCommand::Explain {
                fqdn,
                roles,
                release,
                siblings,
                root,
                json,
                ..
            } => commands::whitelist::explain(
                &repo,
                fqdn.as_deref(),
                &roles,
                release.as_deref(),
                siblings.then(|| match &root {
                    Some(r) => crate::platform::target::Target::at_root_read_only(r),
                    None => crate::platform::target::Target::host(),
                }),
                json,
            ),
            WhitelistCommand::Promote { rollout, to } => {
                commands::whitelist::promote(&repo, &rollout, to.as_ref())
            }
            WhitelistCommand::Audit { node, json } => {
                commands::whitelist::audit(&repo, &node.as_node(), json)
            }
            WhitelistCommand::Outdated { node, json } => {
                commands::whitelist::outdated(&repo, &node.as_node(), json)
            }
            WhitelistCommand::Mirror {
                out,
                roles,
                release,
            } => commands::whitelist::mirror(&repo, &out, &roles, release.as_deref()),
            WhitelistCommand::Stage {
                name,
                packages,
                hosts,
                rollout_roles,
                percent,
                attributes,
                run_list,
                node,
            } => commands::whitelist::stage(
                &repo,
                &node.as_node(),
                &commands::whitelist::Stage {
                    name: &name,
                    packages: &packages,
                    hosts: &hosts,
                    rollout_roles: &rollout_roles,
                    percent,
                    attributes: &attributes,
                    run_list: &run_list,
                },
            ),
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

fn report_error(e: &Error) {
    eprintln!("{}", crate::text::terminal_safe(&e.render()));
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
            Command::RootExec(a) => {
                assert_eq!(a.root, root);
                assert!(a.read_only);
                assert_eq!(a.argv, ["apt-cache", "--root", "-x", "--", "a b"]);
            }
            _ => panic!("not __root-exec"),
        }
    }

    /// The arguments reach the command's options whole, defaults included.
    #[test]
    fn arguments_become_the_commands_options() {
        let parse = |line: &[&str]| Cli::try_parse_from(line).unwrap().command;
        let Command::Devvm(d) = parse(&["kiln", "devvm", "up", "--timeout", "5", "--recreate"])
        else {
            panic!("not devvm");
        };
        match d.command.options(PathBuf::from("/policy")) {
            commands::devvm::Devvm::Up(u) => {
                assert_eq!(u.name, commands::devvm::DEFAULT_NAME);
                assert_eq!(u.timeout, Some(Duration::from_secs(5)));
                assert!(u.recreate);
                // Left out: the VM's own, else the defaults.
                assert_eq!(u.image.release, None);
                let build = u.image.request(None, false);
                assert_eq!(build.repo, PathBuf::from("/policy"));
                assert_eq!(build.role, "devvm");
                assert_eq!(build.release, crate::devvm::base::DEFAULT_RELEASE);
                assert!(!build.force);
            }
            _ => panic!("not up"),
        }
        let Command::Test(t) = parse(&["kiln", "test", "web", "--strict-pins"]) else {
            panic!("not test");
        };
        let t = t.options(PathBuf::from("."));
        assert_eq!(t.roles, ["web"]);
        assert_eq!(t.pins, crate::engine::PinMode::Strict);
        assert_eq!(t.timeout, Duration::from_secs(1800));
        assert!(t.jobs >= 1);
        let Command::Test(t) = parse(&["kiln", "test", "--jobs", "3"]) else {
            panic!("not test");
        };
        assert_eq!(t.options(PathBuf::from(".")).jobs, 3);
        assert!(Cli::try_parse_from(["kiln", "test", "--jobs", "0"]).is_err());
        let Command::VerifyBundle(v) = parse(&["kiln", "verify-bundle", "b.tar"]) else {
            panic!("not verify-bundle");
        };
        let v = commands::verify::Bundle::from(v);
        assert_eq!(v.signature, None);
        assert_eq!(
            v.allowed_signers,
            PathBuf::from(crate::trust::ALLOWED_SIGNERS)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("0").unwrap(), Duration::ZERO);
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("1h 30m").unwrap(), Duration::from_secs(5400));
        let e = duration("5x").unwrap_err();
        assert!(matches!(e, BadDuration::Written { .. }), "{e}");
        assert!(e.to_string().contains("such as 30s"), "{e}");
        assert!(duration("").is_err());
        let e = duration("99999999999999999999").unwrap_err();
        assert!(matches!(e, BadDuration::Seconds { .. }), "{e}");
    }

    /// The parse of converge alone takes what the whole command takes, to
    /// the same values, and leaves it everything else.
    #[test]
    fn converge_alone_parses_as_the_whole_command() {
        use clap::CommandFactory;
        let lines: [&[&str]; 5] = [
            &[
                "kiln", "converge", "--role", "a", "--role", "b", "--root", "/t",
            ],
            &[
                "kiln",
                "converge",
                "--repo",
                "/p",
                "--run-list",
                "recipe[x]",
                "--why-run",
            ],
            &[
                "kiln",
                "converge",
                "--fqdn=h.example",
                "--json",
                "--detailed-exitcodes",
                "--lock-timeout",
                "5s",
            ],
            &[
                "kiln",
                "converge",
                "--node",
                "n.toml",
                "--size",
                "small",
                "--report-to",
                "http://s:1",
            ],
            &["kiln", "converge", "--substitute-vanished-pins"],
        ];
        // Each argument's values and where they came from, at the top and
        // in converge (the same definitions, below, parse them alike).
        let values = |m: &clap::ArgMatches| -> Vec<String> {
            let (name, sub) = m.subcommand().unwrap();
            let mut ids: Vec<_> = sub.ids().map(|i| i.as_str().to_string()).collect();
            ids.sort();
            let mut out = vec![name.to_string(), format!("{:?}", m.get_raw("repo"))];
            for id in ids {
                let raw: Option<Vec<_>> = sub.get_raw(&id).map(Iterator::collect);
                out.push(format!("{id} {raw:?} {:?}", sub.value_source(&id)));
            }
            out
        };
        for line in lines {
            let alone = converge_command().try_get_matches_from(line).unwrap();
            let whole = Cli::command().try_get_matches_from(line).unwrap();
            assert_eq!(values(&alone), values(&whole), "{line:?}");
            assert!(converge_alone(line.iter().map(Into::into)).is_some());
        }
        let left: [&[&str]; 6] = [
            &["kiln", "--repo", "/p", "converge"],
            &["kiln", "converge", "--help"],
            &["kiln", "converge", "--version"],
            &["kiln", "converge", "--bogus"],
            &["kiln", "check"],
            &["kiln"],
        ];
        for line in left {
            assert!(
                converge_alone(line.iter().map(Into::into)).is_none(),
                "{line:?}"
            );
        }
        let whole = Cli::command();
        let whole = whole.find_subcommand("converge").unwrap();
        let alone = converge_command();
        let alone = alone.find_subcommand("converge").unwrap();
        let args = |c: &clap::Command| -> Vec<String> {
            c.get_arguments().map(|a| format!("{a:?}")).collect()
        };
        assert_eq!(args(alone), args(whole));
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

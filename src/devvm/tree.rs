//! The image's tree: an overlay on the dev VM base root, configured and
//! converged in parts that are kept as checkpoints, as `kiln test` keeps a
//! role's first converge (see [`crate::engine::checkpoint`]). Rebuilding an
//! image after a change late in the role converges only what follows the
//! last apt transaction before the change.
//!
//! The guest configuration goes into the first layer, before the converge,
//! as it did into the copied tree: the converge decrypts secrets with the
//! image's ssh host key, made there. Its inputs are in the chain's seed.

use std::collections::BTreeSet;
use std::path::Path;

use super::guest::{self, GuestConfig};
use super::{DevvmError, Event};
use crate::engine::checkpoint::{self, Layers, Store};
use crate::engine::{self, Converge, Node, Part, Report};
use crate::error::{Error, RunError};
use crate::platform::pins::PinMode;
use crate::platform::rootfs::Overlay;
use crate::platform::target::{Durability, Target};
use crate::policy::Repository;

/// What an image's tree is converged from, besides the guest's
/// configuration.
pub struct Request<'a> {
    pub repo: &'a Path,
    pub release: &'a str,
    /// From the base root, neither using nor keeping checkpoints.
    pub no_cache: bool,
    pub strict_pins: bool,
}

/// The converged tree, mounted; its changes since the last layer are
/// thrown away on drop.
pub struct Tree {
    pub overlay: Overlay,
    /// The converge's report: the last part's, with the counts of all.
    pub report: Report,
}

/// Configures the guest and converges the role over `base`, from the
/// deepest checkpoint that still matches unless `req.no_cache`. Without a
/// store the overlay lives under `scratch` (the build's own directory).
pub fn converge(
    req: &Request,
    cfg: &GuestConfig,
    base: &Path,
    scratch: &Path,
    on: &dyn Fn(Event),
) -> Result<Tree, Error> {
    let step = |msg: String| on(Event::Step(msg));
    let store = match req.no_cache {
        true => None,
        false => Some(Store::open()?),
    };
    let work = store
        .as_ref()
        .map_or(scratch.to_path_buf(), Store::work_dir);
    let mut layers = Layers::new(base, &work, &format!("devvm-{}", req.release));
    let mut overlay = layers.mount()?;
    let repo_dir =
        std::fs::canonicalize(req.repo).map_err(|e| RunError::io("open", req.repo.display(), e))?;
    let pins = match req.strict_pins {
        true => PinMode::Strict,
        false => PinMode::Substitute,
    };

    // The parts still to run: up to each checkpoint after the start, or
    // the whole run list in one without a store.
    let mut cuts = Vec::new();
    let mut pending = Vec::new();
    let mut from = "from the base root".to_string();
    let mut configured = false;
    if let Some(store) = &store {
        let repo = Repository::open(&repo_dir)?;
        let seed = seed(&repo, req, cfg, pins, overlay.root())?;
        // Compiled as `kiln test` compiles for its keys: secrets as their
        // names, so that no value goes into a key (their files are in the seed).
        let node = Node::role(cfg.role)
            .named(cfg.hostname)
            .sized(Some(cfg.size.to_string()));
        let facts = node.facts(&Target::at_root(base));
        let policy = engine::compile(&repo, &node, &facts, &crate::secrets::Placeholder)?;
        // The versions a pin's siblings resolve to are not known before
        // the converge (the base root has no index): a pin is in its
        // resource's compiled form, its siblings are not.
        cuts = checkpoint::cuts(&policy, &repo_dir, seed.as_bytes(), &|_| String::new());
        if let Some(start) = store.find(&cuts)? {
            let m = layers.start_from(start);
            from = m.shown();
            cuts.retain(|c| c.until > m.until);
            pending = m.pending;
            configured = true;
            drop(overlay);
            overlay = layers.mount()?;
        }
    }
    step(from);
    if !configured {
        step(format!(
            "configuring the guest: hostname {}, ssh key, DHCP, app share at {}",
            cfg.hostname, cfg.app_mount
        ));
        guest::configure(overlay.root(), cfg)?;
    }
    step(format!(
        "converging role {} (size {}) into the image",
        cfg.role, cfg.size
    ));
    let converge = Converge {
        fqdn: Some(cfg.hostname.to_string()),
        size: Some(cfg.size.to_string()),
        pins,
        // A failed build leaves no image: the tree is built again.
        durability: Durability::Throwaway,
        ..Converge::roles(req.repo, &[cfg.role.to_string()])
    };
    let mut parts: Vec<Option<checkpoint::Cut>> = cuts.into_iter().map(Some).collect();
    if parts.is_empty() {
        // One whole converge: without checkpoints, or from the last one
        // (nothing left to change; its report is the image's).
        parts.push(None);
    }
    let mut warned = BTreeSet::new();
    let mut shown = BTreeSet::new();
    let mut total: Option<Report> = None;
    for cut in parts {
        // The merged path moves with each remount: prepared again per part.
        let prepared = engine::prepare(&Converge {
            root: Some(overlay.root().to_path_buf()),
            ..converge.clone()
        })?;
        let part = Part {
            until: cut.as_ref().map(|c| c.until),
            pending: std::mem::take(&mut pending),
        };
        let mut checked = Vec::new();
        let report = prepared.apply_part(&part, &mut |e| match e {
            engine::Event::Resource(r) => {
                // A part checks the resources of the parts before it again:
                // what those said is not said twice.
                let id = (r.note.is_none()).then(|| (r.resource.clone(), r.origin.clone()));
                let said = id.as_ref().is_some_and(|id| shown.contains(id));
                checked.extend(id);
                if let Some(line) = r.line().filter(|_| !said) {
                    on(Event::Converged(line));
                }
            }
            // Each part finds the same substitutions: said once.
            engine::Event::Warning(w) => {
                if warned.insert(w.to_string()) {
                    on(Event::Warning(w.to_string()));
                }
            }
        })?;
        shown.extend(checked);
        let failed = !report.success;
        let mut report = report;
        if let Some(before) = total.take() {
            report.updated += before.updated;
            report.failed += before.failed;
            report.elapsed_ms += before.elapsed_ms;
        }
        total = Some(report);
        if failed {
            if let Some(r) = &total {
                on(Event::ConvergeSummary(r.summary()));
            }
            return Err(DevvmError::ImageConvergeFailed {
                role: cfg.role.to_string(),
            }
            .into());
        }
        let (Some(store), Some(cut)) = (&store, cut) else {
            continue;
        };
        // The packages apt fetched stay in kiln's cache; a layer holds none.
        crate::platform::pincache::keep(&overlay.root().join("var/cache/apt/archives"));
        let last = total.as_ref().expect("a part ran");
        let meta = checkpoint::Meta {
            key: cut.key,
            parent: None,
            until: cut.until,
            total: prepared.policy.resources.len(),
            resource: cut.resource,
            pending: last.pending.clone(),
            test_key: String::new(),
            bytes: 0,
        };
        pending = meta.pending.clone();
        overlay = layers.keep(store, overlay, meta)?;
    }
    let report = total.expect("at least one part");
    on(Event::ConvergeSummary(report.summary()));
    Ok(Tree { overlay, report })
}

/// Everything the first layer depends on besides the policy: kiln, the
/// base root, the release, the node, the pin mode, the apt index, the
/// guest configuration written before the converge, and the encrypted
/// secrets (the keys see only their names, while an image holds their
/// values: a changed secret converges the whole role again).
fn seed(
    repo: &Repository,
    req: &Request,
    cfg: &GuestConfig,
    pins: PinMode,
    root: &Path,
) -> Result<String, Error> {
    let mut secrets = String::new();
    for f in repo
        .files()?
        .iter()
        .filter(|f| f.rel.starts_with("secrets/"))
    {
        let sum = crate::digest::sha256_file(&f.path)
            .map_err(|e| RunError::io("read", f.path.display(), e))?;
        secrets.push_str(&format!("{} {sum}\n", f.rel));
    }
    let guest = format!(
        "hostname={}\nrole={}\nsize={}\nauthorized_key={}\napp_mount={}\nkiln_binary={}\n",
        cfg.hostname, cfg.role, cfg.size, cfg.authorized_key, cfg.app_mount, cfg.kiln_binary
    );
    Ok(format!(
        "kiln={}\nroot={}\nrelease={}\nfqdn={}\nsize={:?}\npins={pins:?}\nindex={}\nguest={}\nsecrets={}\n",
        checkpoint::kiln_digest()?,
        super::base::key(req.release)?,
        req.release,
        cfg.hostname,
        Some(cfg.size),
        checkpoint::index_digest(&[&root.join("var/lib/apt/lists")]),
        crate::digest::sha256_hex(guest.as_bytes()),
        crate::digest::sha256_hex(secrets.as_bytes()),
    ))
}

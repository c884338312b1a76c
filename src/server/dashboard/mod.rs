//! The dashboard: the fleet, its rollouts, packages and drift as HTML
//! pages that `kiln server` renders from what the store holds, next to
//! its API and behind the same read token (see [`session`]). Pages carry
//! no script and load nothing from elsewhere; charts are SVG made here.
//! Each page is a function from the store (and the policy, for pins and
//! rollouts) to markup.

pub mod chart;
mod drift;
mod fleet;
mod host;
pub mod html;
mod packages;
mod rollouts;
pub mod session;

use std::path::PathBuf;

use crate::policy::whitelist::Whitelist;
use crate::store::{Store, StoreError};

/// The stylesheet, served at `/static/kiln.css`.
pub const CSS: &str = include_str!("kiln.css");

/// What a page is rendered from.
pub struct View<'a> {
    pub store: &'a mut dyn Store,
    pub now: u64,
    /// A host with no interval is stale after this long (seconds).
    pub stale_after: u64,
    /// The policy repository (`--repo`), for pins and rollouts.
    pub repo: Option<&'a PathBuf>,
    /// The request's query, decoded.
    pub query: &'a [(String, String)],
}

impl<'a> View<'a> {
    fn arg(&self, key: &str) -> &'a str {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The whitelist of `--repo`; the page says why when there is none.
    fn whitelist(&self) -> Result<Whitelist, NoPolicy> {
        let dir = self.repo.ok_or(NoPolicy::NoRepo)?;
        Ok(crate::policy::Repository::open(dir).and_then(|r| Whitelist::load(&r))?)
    }
}

/// Why a page shows no pins or rollouts.
#[derive(Debug, thiserror::Error)]
pub enum NoPolicy {
    #[error("no policy repository: start kiln server with --repo DIR")]
    NoRepo,
    #[error(transparent)]
    Policy(#[from] crate::error::PolicyError),
}

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no host {0} in the store")]
    NoHost(String),
    #[error("no such page: {0}")]
    NoPage(String),
}

impl PageError {
    pub fn status(&self) -> u16 {
        match self {
            PageError::Store(_) => 500,
            PageError::NoHost(_) | PageError::NoPage(_) => 404,
        }
    }

    /// The page that says what went wrong.
    pub fn page(&self) -> String {
        html::page(
            "Not shown",
            html::Nav::None,
            &format!("<p class=\"problem\">{}</p>", html::esc(&self.to_string())),
            None,
        )
    }
}

/// The page at `path`, rendered.
pub fn render(path: &str, view: &mut View) -> Result<String, PageError> {
    match path {
        "/fleet" => fleet::page(view),
        "/host" => host::page(view),
        "/rollouts" => rollouts::page(view),
        "/packages" => packages::page(view),
        "/drift" => drift::page(view),
        _ => Err(PageError::NoPage(path.to_string())),
    }
}

/// Whether `path` is a page of the dashboard (and needs a login).
pub fn is_page(path: &str) -> bool {
    matches!(
        path,
        "/" | "/fleet" | "/host" | "/rollouts" | "/packages" | "/drift"
    )
}

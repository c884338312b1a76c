//! The rollout's order: canaries first, then the other hosts in batches,
//! computed before any host is touched.

use serde::Serialize;

use super::inventory::Host;

#[derive(Debug, Clone)]
pub struct Options {
    pub canary: Option<usize>,
    pub batch: Option<BatchSize>,
    pub parallel: usize,
    pub max_fail: usize,
    pub why_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Hosts(usize),
    Percent(usize),
}

/// A `--batch` that is neither a number of hosts nor a percentage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--batch {0:?}: expected a number of hosts (5) or a percentage (25%)")]
pub struct BadBatch(pub String);

impl std::str::FromStr for BatchSize {
    type Err = BadBatch;
    fn from_str(s: &str) -> Result<Self, BadBatch> {
        let bad = || BadBatch(s.to_string());
        match s.strip_suffix('%') {
            Some(p) => match p.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => Ok(BatchSize::Percent(n)),
                _ => Err(bad()),
            },
            None => match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(BatchSize::Hosts(n)),
                _ => Err(bad()),
            },
        }
    }
}

/// A phase of the rollout: indices into the host list.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub name: String,
    pub hosts: Vec<usize>,
}

/// Canaries (flagged hosts first, then hosts in inventory order up to
/// `--canary N`), then the rest in batches.
pub fn plan(hosts: &[Host], opts: &Options) -> Vec<Batch> {
    let mut canaries: Vec<usize> = (0..hosts.len()).filter(|&i| hosts[i].canary).collect();
    if let Some(n) = opts.canary {
        for i in 0..hosts.len() {
            if canaries.len() >= n {
                break;
            }
            if !canaries.contains(&i) {
                canaries.push(i);
            }
        }
        canaries.truncate(n.max(canaries.iter().filter(|&&i| hosts[i].canary).count()));
    }
    let rest: Vec<usize> = (0..hosts.len()).filter(|i| !canaries.contains(i)).collect();
    let mut out = Vec::new();
    if !canaries.is_empty() {
        out.push(Batch {
            name: "canary".into(),
            hosts: canaries,
        });
    }
    let size = match opts.batch {
        None => rest.len().max(1),
        Some(BatchSize::Hosts(n)) => n,
        Some(BatchSize::Percent(p)) => (rest.len() * p).div_ceil(100).max(1),
    };
    for (i, chunk) in rest.chunks(size).enumerate() {
        out.push(Batch {
            name: format!("batch {}", i + 1),
            hosts: chunk.to_vec(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize, canary: &[usize]) -> Vec<Host> {
        (0..n)
            .map(|i| Host {
                fqdn: format!("h{i}"),
                address: format!("10.0.0.{i}"),
                port: 22,
                user: "root".into(),
                roles: vec!["web".into()],
                canary: canary.contains(&i),
                attributes: toml::Table::new(),
                line: 1,
            })
            .collect()
    }

    fn opts(canary: Option<usize>, batch: Option<&str>) -> Options {
        Options {
            canary,
            batch: batch.map(|b| b.parse().unwrap()),
            parallel: 4,
            max_fail: 0,
            why_run: false,
        }
    }

    #[test]
    fn canaries_then_batches() {
        let p = plan(&hosts(10, &[7]), &opts(None, Some("4")));
        let names: Vec<(&str, Vec<usize>)> = p
            .iter()
            .map(|b| (b.name.as_str(), b.hosts.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("canary", vec![7]),
                ("batch 1", vec![0, 1, 2, 3]),
                ("batch 2", vec![4, 5, 6, 8]),
                ("batch 3", vec![9])
            ]
        );
        let p = plan(&hosts(10, &[7]), &opts(Some(2), Some("50%")));
        assert_eq!(p[0].hosts, [7, 0]);
        assert_eq!(p[1].hosts.len(), 4);
        assert_eq!(p.len(), 3);
        let p = plan(&hosts(3, &[]), &opts(None, None));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "batch 1");
        assert!("0".parse::<BatchSize>().is_err());
        assert!("101%".parse::<BatchSize>().is_err());
    }
}

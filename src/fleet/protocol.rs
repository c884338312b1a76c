//! What `kiln verify --json` prints on a host and `kiln fleet` reads back:
//! one JSON document, so that both ends share one type and no marker
//! splits the output.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::Report;
use crate::verify::CheckOutcome;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostReport {
    /// The converge run first, with `--converge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converge: Option<Report>,
    /// Every check passed (false when they did not run).
    pub success: bool,
    /// The verify checks, run only after a successful real converge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckOutcome>>,
    /// With `--converge --why-run`: what the host's policy wants of each
    /// managed resource, as [`crate::engine::desired_digests`], so that
    /// `fleet status` compares hosts only where their policies agree.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub desired: BTreeMap<String, String>,
}

impl HostReport {
    /// The checks' outcome on their own (`kiln verify` without `--converge`).
    pub fn checks(checks: Vec<CheckOutcome>) -> Self {
        HostReport {
            converge: None,
            success: checks.iter().all(|c| c.ok),
            checks: Some(checks),
            desired: BTreeMap::new(),
        }
    }

    pub fn parse(text: &str) -> Result<HostReport, serde_json::Error> {
        serde_json::from_str(text.trim())
    }

    /// The report as it leaves the host: no secret value in it.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        crate::secrets::redact::json(&mut v);
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let r = HostReport {
            converge: Some(Report {
                updated: 2,
                success: true,
                ..Report::default()
            }),
            ..HostReport::checks(vec![CheckOutcome {
                check: "port 80".into(),
                origin: "web".into(),
                ok: true,
                detail: "open".into(),
            }])
        };
        let back = HostReport::parse(&r.to_json()).unwrap();
        assert_eq!(back.converge.unwrap().updated, 2);
        assert!(back.success);
        assert_eq!(back.checks.unwrap()[0].detail, "open");
        // Without --converge: the same fields `kiln verify --json` always had.
        let plain: serde_json::Value =
            serde_json::from_str(&HostReport::checks(vec![]).to_json()).unwrap();
        assert_eq!(plain, serde_json::json!({"success": true, "checks": []}));
    }
}

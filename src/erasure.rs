//! What erasing a video found: plain counts, made by the storage (per
//! target, then summed) and stored by the database with the receipt. A
//! leaf: neither the storage nor the database needs the other for it.

/// One target's counts in a receipt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TargetErased {
    /// The target's name (`default` for a single storage object).
    pub name: String,
    /// Files (local) or objects (keys) removed.
    pub objects: u32,
    /// Object versions and delete markers deleted by version id.
    pub versions: u32,
    /// Paths that had nothing.
    pub missing: u32,
    /// Versions left in the bucket behind a delete marker (`markers`).
    pub versions_kept: u32,
}

/// What erasing one video's paths found on every target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Paths that had something, now gone, summed over the targets.
    pub deleted: u32,
    /// Paths that had nothing, summed over the targets.
    pub missing: u32,
    /// Per target, in the configured order.
    pub targets: Vec<TargetErased>,
}

/// The video as a whole, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// At least one of its paths existed and is now gone.
    Deleted,
    /// None of its paths existed: counts as deleted.
    Missing,
}

impl Removed {
    pub(crate) fn outcome(&self) -> Outcome {
        if self.deleted > 0 {
            Outcome::Deleted
        } else {
            Outcome::Missing
        }
    }

    /// The per-target counts as stored with the receipt (a JSON list).
    pub fn targets_json(&self) -> String {
        serde_json::to_string(&self.targets).expect("counts serialize")
    }
}

//! Branch key retirement: move every owner key to the active branch key
//! version, then delete the older versions nothing names any more.

use std::collections::BTreeSet;

use cardbind_domain::Timestamp;
use cardbind_ports::error::{KeyError, StoreError};
use cardbind_ports::store::WrappedKey;

use crate::branch::{self, branch_owner, now, parse_branch_owner, store_err, BranchKey};
use crate::master::MasterKey;
use crate::vault::EnvelopeVault;

/// Keys listed per store page.
const PAGE: u32 = 100;
/// Attempts per key when its record changes under us.
const MAX_CONFLICTS: u32 = 5;

/// What a retirement run did (also passed to the progress callback after
/// every key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetireReport {
    /// The active branch version (`@branch:…`) keys were moved to.
    pub active: String,
    /// Owner key records looked at.
    pub scanned: u64,
    /// Re-wrapped under the active version by this run (from an older
    /// version, or from a master key for keys stored before branch keys).
    pub rewrapped: u64,
    /// Already under the active version (or a newer one).
    pub already_current: u64,
    /// Erased while the run went on.
    pub vanished: u64,
    /// Owners whose key did not unwrap (left as they were; the versions
    /// they name are kept).
    pub failed: Vec<String>,
    /// Older branch versions deleted by this run.
    pub retired: Vec<String>,
    /// Older branch versions kept: some key failed under them, or the
    /// active version is too recent (see `retire_after`).
    pub kept: Vec<String>,
    /// When set, the active version became active too recently for an
    /// older one to be deleted safely: run again after this instant.
    pub retire_after: Option<Timestamp>,
}

impl<M: MasterKey> EnvelopeVault<M> {
    /// Re-wraps every owner key (users, `@fingerprint…`, `@digest`, `@canary`) that is
    /// not under the active branch version so that it is, then deletes the
    /// branch versions older than the active one that no key names any more.
    /// With `new_version`, first makes a new version and activates it (to
    /// retire the current one early, e.g. after an erasure that must reach
    /// backups soon).
    ///
    /// Re-wrapping is local (one master key call per branch version read,
    /// none per key); the data keys and so every data ciphertext stay the
    /// same. Each record is replaced conditionally on its `version`, so the
    /// service may keep running: a key changed or erased meanwhile is
    /// re-read and retried, or counted as vanished.
    ///
    /// An older version is deleted only when the active version has been
    /// active for [`BranchConfig::retire_grace`](crate::BranchConfig::retire_grace)
    /// (two branch key TTLs, the longest a seal may take, and the clock
    /// skew allowance, a minute by default) before this run started: until
    /// then an instance that has not re-read the active version may still
    /// wrap new keys under the old one. The run then re-wraps what it finds
    /// and reports `retire_after`; run it again after that instant.
    ///
    /// Stops with `Unavailable` when the key service or store cannot be
    /// reached (run it again to resume).
    pub async fn retire_branches<F>(
        &self,
        new_version: bool,
        mut progress: F,
    ) -> Result<RetireReport, KeyError>
    where
        F: FnMut(&RetireReport),
    {
        let started = now();
        let (active, info) = self.keyring.refresh_active(new_version).await?;
        let mut report = RetireReport {
            active: active.owner.clone(),
            ..RetireReport::default()
        };
        let mut versions = BTreeSet::new();
        let mut blocked = BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(after.clone(), PAGE)
                .await
                .map_err(store_err)?;
            let Some(last) = page.last() else { break };
            after = Some(last.owner.clone());
            let full = page.len() >= PAGE as usize;
            for wk in page {
                if let Some(n) = parse_branch_owner(&wk.owner) {
                    versions.insert(n);
                    continue;
                }
                let wrapped_by_branch = parse_branch_owner(&wk.master_key_id).is_some();
                if wk.master_key_id.starts_with('@') && !wrapped_by_branch {
                    continue; // the sealed canary, the active-version record
                }
                report.scanned += 1;
                self.rewrap_one(wk, &active, &mut report, &mut blocked)
                    .await?;
                progress(&report);
            }
            if !full {
                break;
            }
        }

        let grace_ms =
            i64::try_from(self.config().branch.retire_grace().as_millis()).unwrap_or(i64::MAX);
        let safe_from = info.activated_at.unix_millis().saturating_add(grace_ms);
        let settled = started.unix_millis() >= safe_from;
        for n in versions.range(..active.number) {
            let name = branch_owner(*n);
            if blocked.contains(n) || !settled {
                report.kept.push(name);
                continue;
            }
            if self.store.delete(&name).await.map_err(store_err)? {
                tracing::info!(branch = %name, "retired a branch key version");
            }
            self.keyring.forget(*n);
            report.retired.push(name);
        }
        if !settled && !report.kept.is_empty() {
            report.retire_after = Some(Timestamp::from_unix_millis(safe_from));
        }
        tracing::info!(
            active = %report.active,
            scanned = report.scanned,
            rewrapped = report.rewrapped,
            already_current = report.already_current,
            failed = report.failed.len(),
            retired = report.retired.len(),
            kept = report.kept.len(),
            "branch key retirement finished"
        );
        Ok(report)
    }

    async fn rewrap_one(
        &self,
        mut wk: WrappedKey,
        active: &BranchKey,
        report: &mut RetireReport,
        blocked: &mut BTreeSet<u64>,
    ) -> Result<(), KeyError> {
        for _ in 0..MAX_CONFLICTS {
            let under = parse_branch_owner(&wk.master_key_id);
            if under.is_some_and(|n| n >= active.number) {
                report.already_current += 1;
                return Ok(());
            }
            let key = match self.unwrap_stored(&wk.owner, &wk, false).await {
                Ok(k) => k,
                Err(KeyError::Refused(m)) => {
                    tracing::warn!(owner = %wk.owner, reason = %m, "branch retirement: key not re-wrapped");
                    report.failed.push(wk.owner.clone());
                    if let Some(n) = under {
                        blocked.insert(n);
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let new = WrappedKey {
                master_key_id: active.owner.clone(),
                wrapped: branch::wrap(active, &wk.owner, &key)?,
                version: wk.version + 1,
                ..wk.clone()
            };
            match self.store.replace(&new, wk.version).await {
                Ok(()) => {
                    report.rewrapped += 1;
                    return Ok(());
                }
                Err(StoreError::Conflict) => {
                    match self.store.get(&wk.owner).await.map_err(store_err)? {
                        None => {
                            report.vanished += 1;
                            return Ok(());
                        }
                        Some(current) => wk = current,
                    }
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        tracing::warn!(owner = %wk.owner, "retirement: key not re-wrapped (changed by others on every try)");
        report.failed.push(wk.owner.clone());
        if let Some(n) = parse_branch_owner(&wk.master_key_id) {
            blocked.insert(n);
        }
        Ok(())
    }
}

//! Master key rotation: re-wrap every key the master key wraps (the branch
//! keys, and keys stored before branch keys existed), data untouched.

use cardbind_ports::error::{KeyError, StoreError};
use cardbind_ports::store::{DataKeyStore, WrappedKey};

use crate::master::MasterKey;

/// Keys listed per store page.
const PAGE: u32 = 100;
/// Attempts per key when its record changes under us.
const MAX_CONFLICTS: u32 = 5;

/// What a rotation run did (also passed to the progress callback after
/// every key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Records wrapped by a master key looked at (branch key versions, and
    /// keys stored before branch keys existed).
    pub scanned: u64,
    /// Re-wrapped from the old to the new master key by this run.
    pub rewrapped: u64,
    /// Already under the new master key (an earlier, interrupted run, or
    /// made by a service already using the new key).
    pub already_current: u64,
    /// Under a master key that is neither `from` nor `to`: left alone.
    pub other_master_key: u64,
    /// Deleted (erased) while the rotation ran.
    pub vanished: u64,
    /// Owners whose key the old master key refused to unwrap (left as they
    /// were; the run goes on).
    pub failed: Vec<String>,
}

fn store_err(e: StoreError) -> KeyError {
    KeyError::Unavailable(format!("key store: {e}"))
}

/// Re-wraps every key in `store` that is wrapped under `from` so that it is
/// wrapped under `to` (KMS `ReEncrypt`, or unwrap + wrap for the local key),
/// keeping the key itself, so no data ciphertext changes.
///
/// The master key wraps only the branch key versions (`@branch:…`), so a
/// run makes one master key call per branch version, not one per user:
/// records whose `master_key_id` starts with `@` (owner keys wrapped under
/// a branch key, the sealed canary, the active-version record) are not
/// wrapped by a master key and are skipped. Owner keys stored before branch
/// keys existed name a master key and are re-wrapped too.
///
/// Each record is replaced conditionally on its `version` (bumped by one),
/// so the service may keep running: a key changed or erased meanwhile is
/// re-read and retried, or counted as vanished. Keys already under `to` are
/// skipped, so an interrupted run is resumed by running it again. The
/// service should be configured with `to` as its master key and `from` as a
/// previous key while this runs.
///
/// Stops with `Unavailable` when the key service or store cannot be
/// reached (run it again to resume).
pub async fn rotate<M, F>(
    store: &dyn DataKeyStore,
    from: &M,
    to: &M,
    mut progress: F,
) -> Result<RotationReport, KeyError>
where
    M: MasterKey,
    F: FnMut(&RotationReport),
{
    if from.key_id() == to.key_id() {
        return Err(KeyError::Refused(
            "rotation needs two different master keys".into(),
        ));
    }
    let mut report = RotationReport::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(after.clone(), PAGE).await.map_err(store_err)?;
        let Some(last) = page.last() else { break };
        after = Some(last.owner.clone());
        let full = page.len() >= PAGE as usize;
        for wk in page {
            if wk.master_key_id.starts_with('@') {
                continue;
            }
            report.scanned += 1;
            rotate_one(store, from, to, wk, &mut report).await?;
            progress(&report);
        }
        if !full {
            break;
        }
    }
    tracing::info!(
        from = from.key_id(),
        to = to.key_id(),
        scanned = report.scanned,
        rewrapped = report.rewrapped,
        already_current = report.already_current,
        failed = report.failed.len(),
        "master key rotation finished"
    );
    Ok(report)
}

async fn rotate_one<M: MasterKey>(
    store: &dyn DataKeyStore,
    from: &M,
    to: &M,
    mut wk: WrappedKey,
    report: &mut RotationReport,
) -> Result<(), KeyError> {
    for _ in 0..MAX_CONFLICTS {
        if wk.master_key_id == to.key_id() {
            report.already_current += 1;
            return Ok(());
        }
        if wk.master_key_id != from.key_id() {
            report.other_master_key += 1;
            return Ok(());
        }
        let rewrapped = match from.re_encrypt(&wk.owner, &wk.wrapped, to).await {
            Ok(w) => w,
            Err(KeyError::Refused(m)) => {
                tracing::warn!(owner = %wk.owner, reason = %m, "rotation: key not re-wrapped");
                report.failed.push(wk.owner.clone());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let new = WrappedKey {
            master_key_id: to.key_id().to_owned(),
            wrapped: rewrapped,
            version: wk.version + 1,
            ..wk.clone()
        };
        match store.replace(&new, wk.version).await {
            Ok(()) => {
                report.rewrapped += 1;
                return Ok(());
            }
            Err(StoreError::Conflict) => match store.get(&wk.owner).await.map_err(store_err)? {
                None => {
                    report.vanished += 1;
                    return Ok(());
                }
                Some(current) => wk = current,
            },
            Err(e) => return Err(store_err(e)),
        }
    }
    tracing::warn!(owner = %wk.owner, "rotation: key not re-wrapped (changed by others on every try)");
    report.failed.push(wk.owner.clone());
    Ok(())
}

use async_trait::async_trait;
use cardbind_domain::{BindingId, ChannelName, SealedCard, UserId};

use crate::error::StoreError;

/// One generation of a binding's sealed card data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardData {
    pub binding: BindingId,
    pub user: UserId,
    /// The binding's `data_generation` this data belongs to.
    pub generation: u32,
    pub sealed: SealedCard,
}

/// Where one generation of a binding's data is kept: what the sweep of
/// data no wallet names reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardDataKey {
    pub binding: BindingId,
    pub generation: u32,
    pub user: UserId,
}

/// Sealed card data, stored once per (binding, generation), and the
/// directory from a binding id to its user (notifications and the review
/// queue name a card by its id alone).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait CardDataStore: Send + Sync {
    /// Stores one generation of a binding's data. MUST return
    /// [`StoreError::Duplicate`] when (`binding`, `generation`) exists: of
    /// concurrent puts of one generation exactly one succeeds.
    async fn put(&self, data: &CardData) -> Result<(), StoreError>;

    /// The data of this generation of the user's binding.
    async fn get(
        &self,
        user: &UserId,
        binding: &BindingId,
        generation: u32,
    ) -> Result<Option<CardData>, StoreError>;

    /// The user whose binding this is, while any generation of its data is
    /// stored.
    async fn owner(&self, binding: &BindingId) -> Result<Option<UserId>, StoreError>;

    /// Deletes every generation of the binding's data but `keep` (none
    /// kept when `None`): what a card that left its wallet, or an erased
    /// user's, leaves, with whatever an interrupted attempt left (an
    /// unbind and a bind again delete one generation each, see
    /// [`CardDataStore::delete_generation`]). Returns how many. Deleting
    /// what is not there is not an error.
    async fn delete(
        &self,
        user: &UserId,
        binding: &BindingId,
        keep: Option<u32>,
    ) -> Result<u64, StoreError>;

    /// Deletes the one generation `generation` of the binding's data (what
    /// a bind stored for a card it then found unbound, failed or erased),
    /// leaving every other generation as it is: a bind of the card again
    /// may be storing its own at the same moment. Returns how many (0 or
    /// 1). Deleting what is not there is not an error.
    async fn delete_generation(
        &self,
        user: &UserId,
        binding: &BindingId,
        generation: u32,
    ) -> Result<u64, StoreError>;

    /// The keys of the stored data in (`binding`, `generation`) order,
    /// from just after `after`, at most `limit`: a walk of every record,
    /// for the operator's sweep (`cardbind sweep-card-data`), never a
    /// request's.
    async fn list_keys(
        &self,
        after: Option<(BindingId, u32)>,
        limit: u32,
    ) -> Result<Vec<CardDataKey>, StoreError>;
}

/// The binding a channel's own reference names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefTarget {
    pub user: UserId,
    pub binding: BindingId,
}

/// One stored channel reference, as the operator's sweep of references
/// reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRefEntry {
    pub channel: ChannelName,
    pub channel_ref: String,
    pub target: RefTarget,
    /// The data generation of the bind that recorded it; `None` for one
    /// recorded before references carried a generation.
    pub generation: Option<u32>,
}

/// Channel references (agreement / contract ids) to bindings, for the
/// notifications that name only the channel's reference.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ChannelRefs: Send + Sync {
    /// Records that `channel_ref` on `channel` names `target`, given by
    /// the bind of the card's data `generation`. Recording the same again
    /// is not an error; a reference is never moved to another binding (the
    /// first target stays). The same reference given again to the same
    /// binding by a bind of another generation (a channel whose reference
    /// is the card's own, as the mock's) is recorded as that bind's.
    /// Returns whether the reference names `target` now (`false`: another
    /// binding's stays).
    async fn put(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
        target: &RefTarget,
        generation: u32,
    ) -> Result<bool, StoreError>;

    /// The stored reference, with the generation of the bind that
    /// recorded it (what [`ChannelRefs::delete_entry`] takes).
    async fn find_entry(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
    ) -> Result<Option<ChannelRefEntry>, StoreError>;

    /// The binding a reference names.
    async fn find(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
    ) -> Result<Option<RefTarget>, StoreError> {
        Ok(self
            .find_entry(channel, channel_ref)
            .await?
            .map(|e| e.target))
    }

    /// Forgets the references that name `binding` of `user`, on every
    /// channel: a card's references are several over its life (each bind
    /// stores the one its start gave, and a signing may name the agreement
    /// by another). With `Some(generation)`, those that bind of the card
    /// recorded (an unbind ends the bind it read, and a bind of the card
    /// again may be recording its own at the same moment), and those
    /// recorded before references carried a generation; with `None`, all
    /// of them (the user is erased, or the card left its wallet). Returns
    /// how many. Deleting what is not there is not an error.
    async fn delete_binding(
        &self,
        user: &UserId,
        binding: &BindingId,
        generation: Option<u32>,
    ) -> Result<u64, StoreError>;

    /// The stored references in (`channel`, `channel_ref`) order, from just
    /// after `after`, at most `limit`: a walk of every record, for the
    /// operator's sweep (`cardbind sweep-card-data`), never a request's.
    async fn list(
        &self,
        after: Option<(ChannelName, String)>,
        limit: u32,
    ) -> Result<Vec<ChannelRefEntry>, StoreError>;

    /// Forgets `entry`'s reference only while it still names the same
    /// target and generation (a bind of the card again may have recorded
    /// it as its own since it was read). Returns how many (0 or 1).
    async fn delete_entry(&self, entry: &ChannelRefEntry) -> Result<u64, StoreError>;
}

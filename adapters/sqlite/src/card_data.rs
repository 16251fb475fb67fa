//! Sealed card data ([`CardDataStore`]) and channel references
//! ([`ChannelRefs`]).

use async_trait::async_trait;
use cardbind_domain::{BindingId, ChannelName, SealedBlob, SealedCard, UserId};
use cardbind_ports::store::{
    CardData, CardDataKey, CardDataStore, ChannelRefEntry, ChannelRefs, RefTarget,
};
use cardbind_ports::StoreError;
use rusqlite::{params, OptionalExtension};

use crate::error::db_err;
use crate::rows::{binding, channel, user};
use crate::SqliteStore;

const INSERT_CARD_DATA: &str =
    "INSERT INTO card_data (binding, generation, user, pan, holder_name, id_number, phone)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING";

const GET_CARD_DATA: &str = "SELECT user, pan, holder_name, id_number, phone FROM card_data
     WHERE binding = ?1 AND generation = ?2";

const CARD_OWNER: &str = "SELECT user FROM card_data WHERE binding = ?1 LIMIT 1";

const DELETE_CARD_DATA: &str =
    "DELETE FROM card_data WHERE binding = ?1 AND user = ?3 AND generation IS NOT ?2";

const DELETE_CARD_DATA_GENERATION: &str =
    "DELETE FROM card_data WHERE binding = ?1 AND generation = ?2 AND user = ?3";

/// The sweep's walk, by the primary key.
const LIST_CARD_DATA_KEYS: &str = "SELECT binding, generation, user FROM card_data
     WHERE (binding, generation) > (?1, ?2)
     ORDER BY binding, generation LIMIT ?3";

const INSERT_REF: &str = "INSERT INTO channel_refs (channel, ref, user, binding, generation)
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (channel, ref) DO UPDATE
     SET generation = excluded.generation
     WHERE channel_refs.user = excluded.user AND channel_refs.binding = excluded.binding";

const FIND_REF: &str =
    "SELECT user, binding, generation FROM channel_refs WHERE channel = ?1 AND ref = ?2";

const DELETE_REFS_OF_BINDING: &str = "DELETE FROM channel_refs WHERE binding = ?1 AND user = ?2";

/// Those one bind recorded, and those recorded before references carried
/// a generation (schema 3 and older).
const DELETE_REFS_OF_GENERATION: &str = "DELETE FROM channel_refs
     WHERE binding = ?1 AND user = ?2 AND (generation = ?3 OR generation IS NULL)";

/// The sweep's walk, by the primary key.
const LIST_REFS: &str = "SELECT channel, ref, user, binding, generation FROM channel_refs
     WHERE (channel, ref) > (?1, ?2)
     ORDER BY channel, ref LIMIT ?3";

/// The sweep's delete: only while the reference is as it was read
/// (`IS` matches a `NULL` generation too).
const DELETE_REF_ENTRY: &str = "DELETE FROM channel_refs
     WHERE channel = ?1 AND ref = ?2 AND user = ?3 AND binding = ?4 AND generation IS ?5";

/// Every statement of this module, for the plan checks.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("INSERT_CARD_DATA", INSERT_CARD_DATA),
    ("GET_CARD_DATA", GET_CARD_DATA),
    ("CARD_OWNER", CARD_OWNER),
    ("DELETE_CARD_DATA", DELETE_CARD_DATA),
    ("LIST_CARD_DATA_KEYS", LIST_CARD_DATA_KEYS),
    ("INSERT_REF", INSERT_REF),
    ("FIND_REF", FIND_REF),
    ("DELETE_REFS_OF_BINDING", DELETE_REFS_OF_BINDING),
    ("DELETE_REFS_OF_GENERATION", DELETE_REFS_OF_GENERATION),
    ("LIST_REFS", LIST_REFS),
    ("DELETE_REF_ENTRY", DELETE_REF_ENTRY),
];

#[async_trait]
impl CardDataStore for SqliteStore {
    async fn put(&self, data: &CardData) -> Result<(), StoreError> {
        let b = data.binding.as_str().to_owned();
        let g = i64::from(data.generation);
        let u = data.user.as_str().to_owned();
        let s = &data.sealed;
        let fields = [
            s.pan.as_bytes().to_vec(),
            s.holder_name.as_bytes().to_vec(),
            s.id_number.as_bytes().to_vec(),
            s.phone.as_bytes().to_vec(),
        ];
        self.engine
            .write(move |tx| {
                let [pan, holder, id, phone] = &fields;
                let n = tx
                    .conn
                    .prepare_cached(INSERT_CARD_DATA)
                    .and_then(|mut st| st.execute(params![b, g, u, pan, holder, id, phone]))
                    .map_err(db_err)?;
                if n == 0 {
                    Err(StoreError::Duplicate)
                } else {
                    Ok(())
                }
            })
            .await
    }

    async fn get(
        &self,
        user_id: &UserId,
        binding_id: &BindingId,
        generation: u32,
    ) -> Result<Option<CardData>, StoreError> {
        let row = self.engine.read(|c| {
            c.prepare_cached(GET_CARD_DATA)
                .and_then(|mut s| {
                    s.query_row(params![binding_id.as_str(), i64::from(generation)], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                            r.get::<_, Vec<u8>>(4)?,
                        ))
                    })
                    .optional()
                })
                .map_err(db_err)
        })?;
        match row {
            // Another user's card is not this user's.
            Some((owner, ..)) if owner != user_id.as_str() => Ok(None),
            Some((_, pan, holder_name, id_number, phone)) => Ok(Some(CardData {
                binding: binding_id.clone(),
                user: user_id.clone(),
                generation,
                sealed: SealedCard {
                    pan: SealedBlob::new(pan),
                    holder_name: SealedBlob::new(holder_name),
                    id_number: SealedBlob::new(id_number),
                    phone: SealedBlob::new(phone),
                },
            })),
            None => Ok(None),
        }
    }

    async fn owner(&self, binding_id: &BindingId) -> Result<Option<UserId>, StoreError> {
        let owner = self.engine.read(|c| {
            c.prepare_cached(CARD_OWNER)
                .and_then(|mut s| {
                    s.query_row([binding_id.as_str()], |r| r.get::<_, String>(0))
                        .optional()
                })
                .map_err(db_err)
        })?;
        owner.as_deref().map(user).transpose()
    }

    async fn delete(
        &self,
        user_id: &UserId,
        binding_id: &BindingId,
        keep: Option<u32>,
    ) -> Result<u64, StoreError> {
        let (u, b, g) = (
            user_id.as_str().to_owned(),
            binding_id.as_str().to_owned(),
            keep.map(i64::from),
        );
        let every = g.is_none();
        self.engine
            .write(move |tx| {
                let n = tx
                    .conn
                    .prepare_cached(DELETE_CARD_DATA)
                    .and_then(|mut s| s.execute(params![b, g, u]))
                    .map_err(db_err)?;
                // Every generation of a card goes (its user is erased, or it
                // left its wallet): secure_delete zeroes the rows in their
                // pages, and the WAL's older copies of those pages go when
                // it is truncated, as for an erased key.
                tx.after.truncate_wal |= every && n > 0;
                Ok(n as u64)
            })
            .await
    }

    async fn delete_generation(
        &self,
        user_id: &UserId,
        binding_id: &BindingId,
        generation: u32,
    ) -> Result<u64, StoreError> {
        let (u, b, g) = (
            user_id.as_str().to_owned(),
            binding_id.as_str().to_owned(),
            i64::from(generation),
        );
        self.engine
            .write(move |tx| {
                tx.conn
                    .prepare_cached(DELETE_CARD_DATA_GENERATION)
                    .and_then(|mut s| s.execute(params![b, g, u]))
                    .map(|n| n as u64)
                    .map_err(db_err)
            })
            .await
    }

    async fn list_keys(
        &self,
        after: Option<(BindingId, u32)>,
        limit: u32,
    ) -> Result<Vec<CardDataKey>, StoreError> {
        // From the start: before every binding id (ids are not empty)
        // and generation.
        let (b, g) = after.map_or_else(
            || (String::new(), -1),
            |(b, g)| (b.as_str().to_owned(), i64::from(g)),
        );
        let rows = self.engine.read(|c| {
            c.prepare_cached(LIST_CARD_DATA_KEYS)
                .and_then(|mut s| {
                    s.query_map(params![b, g, i64::from(limit)], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err)
        })?;
        rows.into_iter()
            .map(|(b, g, u)| {
                Ok(CardDataKey {
                    binding: binding(&b)?,
                    generation: u32::try_from(g)
                        .map_err(|_| cardbind_records::corrupt("generation", g))?,
                    user: user(&u)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl ChannelRefs for SqliteStore {
    async fn put(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
        target: &RefTarget,
        generation: u32,
    ) -> Result<bool, StoreError> {
        let [c, r, u, b] = [
            channel.as_str().to_owned(),
            channel_ref.to_owned(),
            target.user.as_str().to_owned(),
            target.binding.as_str().to_owned(),
        ];
        let g = i64::from(generation);
        self.engine
            .write(move |tx| {
                // Inserted, or the same binding's updated: one row; another
                // binding's (the conflict's `WHERE` false): none.
                tx.conn
                    .prepare_cached(INSERT_REF)
                    .and_then(|mut s| s.execute(params![c, r, u, b, g]))
                    .map(|n| n > 0)
                    .map_err(db_err)
            })
            .await
    }

    async fn find_entry(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
    ) -> Result<Option<ChannelRefEntry>, StoreError> {
        let row = self.engine.read(|c| {
            c.prepare_cached(FIND_REF)
                .and_then(|mut s| {
                    s.query_row([channel.as_str(), channel_ref], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                        ))
                    })
                    .optional()
                })
                .map_err(db_err)
        })?;
        row.map(|(u, b, g)| {
            Ok(ChannelRefEntry {
                channel: channel.clone(),
                channel_ref: channel_ref.to_owned(),
                target: RefTarget {
                    user: user(&u)?,
                    binding: binding(&b)?,
                },
                generation: stored_generation(g)?,
            })
        })
        .transpose()
    }

    async fn delete_binding(
        &self,
        user: &UserId,
        binding: &BindingId,
        generation: Option<u32>,
    ) -> Result<u64, StoreError> {
        let (b, u) = (binding.as_str().to_owned(), user.as_str().to_owned());
        self.engine
            .write(move |tx| {
                match generation {
                    Some(g) => tx
                        .conn
                        .prepare_cached(DELETE_REFS_OF_GENERATION)
                        .and_then(|mut s| s.execute(params![b, u, i64::from(g)])),
                    None => tx
                        .conn
                        .prepare_cached(DELETE_REFS_OF_BINDING)
                        .and_then(|mut s| s.execute(params![b, u])),
                }
                .map(|n| n as u64)
                .map_err(db_err)
            })
            .await
    }

    async fn list(
        &self,
        after: Option<(ChannelName, String)>,
        limit: u32,
    ) -> Result<Vec<ChannelRefEntry>, StoreError> {
        // From the start: before every channel name (names are not empty).
        let (c, r) = after.map_or_else(
            || (String::new(), String::new()),
            |(c, r)| (c.as_str().to_owned(), r),
        );
        let rows = self.engine.read(|conn| {
            conn.prepare_cached(LIST_REFS)
                .and_then(|mut s| {
                    s.query_map(params![c, r, i64::from(limit)], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, Option<i64>>(4)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err)
        })?;
        rows.into_iter()
            .map(|(c, r, u, b, g)| {
                Ok(ChannelRefEntry {
                    channel: channel(&c)?,
                    channel_ref: r,
                    target: RefTarget {
                        user: user(&u)?,
                        binding: binding(&b)?,
                    },
                    generation: stored_generation(g)?,
                })
            })
            .collect()
    }

    async fn delete_entry(&self, entry: &ChannelRefEntry) -> Result<u64, StoreError> {
        let [c, r, u, b] = [
            entry.channel.as_str().to_owned(),
            entry.channel_ref.clone(),
            entry.target.user.as_str().to_owned(),
            entry.target.binding.as_str().to_owned(),
        ];
        let g = entry.generation.map(i64::from);
        self.engine
            .write(move |tx| {
                tx.conn
                    .prepare_cached(DELETE_REF_ENTRY)
                    .and_then(|mut s| s.execute(params![c, r, u, b, g]))
                    .map(|n| n as u64)
                    .map_err(db_err)
            })
            .await
    }
}

/// A reference's stored generation (`NULL` in rows written before
/// references carried one).
fn stored_generation(g: Option<i64>) -> Result<Option<u32>, StoreError> {
    g.map(|g| u32::try_from(g).map_err(|_| cardbind_records::corrupt("generation", g)))
        .transpose()
}

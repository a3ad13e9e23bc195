//! Journey stores: RocksDB on disk (what `run` uses) and an in-memory map (what `replay` and
//! quick tests may use), behind one trait so that every test body runs against both.
//!
//! Layout: `j` + partition (4 bytes, big-endian) + journey key → bincode journey;
//! `m` + partition → partition metadata. All writes of a batch go in one atomic write batch.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a store keeps per partition besides journeys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// The latest `occurred_at` the partition has seen (retention is judged against it).
    pub stream_time: i64,
    /// For the partition that reports refused table records to the DLQ: per table partition
    /// (topic, partition), the next offset to report.
    pub table_dlq_marks: Vec<(String, i32, i64)>,
    /// The changelog segment (transaction) this state was last committed in, under
    /// `exactly_once`; the next segment names it as its parent.
    pub segment: Option<crate::state::changelog::SegmentId>,
}

impl PartitionMeta {
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).expect("metadata serializes")
    }

    pub fn decode(b: &[u8]) -> Result<PartitionMeta> {
        Ok(bincode::deserialize(b)?)
    }
}

/// The changelog key that carries a partition's metadata (journey keys are never empty).
pub const META_CHANGELOG_KEY: &[u8] = b"";

/// One state change: a journey written (`Some`) or deleted (`None`).
pub type StateWrite = (Vec<u8>, Option<Vec<u8>>);

pub trait JourneyStore: Send {
    fn get(&self, partition: i32, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Applies the writes and the partition's metadata atomically.
    fn write(&mut self, partition: i32, writes: &[StateWrite], meta: &PartitionMeta) -> Result<()>;
    fn meta(&self, partition: i32) -> Result<Option<PartitionMeta>>;
    /// Visits every journey of a partition.
    fn scan(&self, partition: i32, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()>;
    /// Forgets a partition (its journeys and metadata).
    fn drop_partition(&mut self, partition: i32) -> Result<()>;
    /// Number of journeys stored (approximate for RocksDB).
    fn journeys(&self) -> u64;
    /// (live data bytes, block-cache hit ratio), where the store has them.
    fn usage(&self) -> (u64, f64) {
        (0, 0.0)
    }
    /// Makes every write so far durable (before a clean shutdown is recorded).
    fn persist(&self) -> Result<()> {
        Ok(())
    }
}

fn journey_key(partition: i32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + key.len());
    k.push(b'j');
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn meta_key(partition: i32) -> [u8; 5] {
    let p = partition.to_be_bytes();
    [b'm', p[0], p[1], p[2], p[3]]
}

fn partition_prefix(partition: i32) -> [u8; 5] {
    let p = partition.to_be_bytes();
    [b'j', p[0], p[1], p[2], p[3]]
}

/// An in-memory store.
/// One partition in memory: its metadata and its journeys by key.
type MemoryPartition = (PartitionMeta, rustc_hash::FxHashMap<Vec<u8>, Vec<u8>>);

#[derive(Default)]
pub struct MemoryStore {
    partitions: rustc_hash::FxHashMap<i32, MemoryPartition>,
}

impl JourneyStore for MemoryStore {
    fn get(&self, partition: i32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .partitions
            .get(&partition)
            .and_then(|(_, m)| m.get(key))
            .cloned())
    }

    fn write(&mut self, partition: i32, writes: &[StateWrite], meta: &PartitionMeta) -> Result<()> {
        let (m, journeys) = self.partitions.entry(partition).or_default();
        for (k, v) in writes {
            match v {
                Some(v) => journeys.insert(k.clone(), v.clone()),
                None => journeys.remove(k),
            };
        }
        *m = meta.clone();
        Ok(())
    }

    fn meta(&self, partition: i32) -> Result<Option<PartitionMeta>> {
        Ok(self.partitions.get(&partition).map(|(m, _)| m.clone()))
    }

    fn scan(&self, partition: i32, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        if let Some((_, m)) = self.partitions.get(&partition) {
            let mut keys: Vec<&Vec<u8>> = m.keys().collect();
            keys.sort();
            for k in keys {
                f(k, &m[k]);
            }
        }
        Ok(())
    }

    fn drop_partition(&mut self, partition: i32) -> Result<()> {
        self.partitions.remove(&partition);
        Ok(())
    }

    fn journeys(&self) -> u64 {
        self.partitions.values().map(|(_, m)| m.len() as u64).sum()
    }
}

/// Journeys in RocksDB.
pub struct RocksStore {
    db: std::sync::Arc<rocksdb::DB>,
    opts: rocksdb::Options,
}

impl RocksStore {
    pub fn open(dir: &Path) -> Result<RocksStore> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state dir {}", dir.display()))?;
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.enable_statistics();
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_write_buffer_size(32 << 20);
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_block_cache(&rocksdb::Cache::new_lru_cache(64 << 20));
        block.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&block);
        let db = rocksdb::DB::open(&opts, dir)
            .with_context(|| format!("cannot open RocksDB at {}", dir.display()))?;
        Ok(RocksStore {
            db: std::sync::Arc::new(db),
            opts,
        })
    }

    /// A shared handle, for readers on other threads (the journeys API).
    pub fn shared(&self) -> std::sync::Arc<rocksdb::DB> {
        self.db.clone()
    }

    /// Live data size in bytes, as RocksDB estimates it.
    pub fn live_size(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.estimate-live-data-size")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Block-cache hit ratio since the store was opened (0 before any read).
    pub fn block_cache_hit_ratio(&self) -> f64 {
        use rocksdb::statistics::Ticker;
        let hit = self.opts.get_ticker_count(Ticker::BlockCacheHit) as f64;
        let miss = self.opts.get_ticker_count(Ticker::BlockCacheMiss) as f64;
        if hit + miss == 0.0 {
            0.0
        } else {
            hit / (hit + miss)
        }
    }
}

impl JourneyStore for RocksStore {
    fn get(&self, partition: i32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(journey_key(partition, key))?)
    }

    fn write(&mut self, partition: i32, writes: &[StateWrite], meta: &PartitionMeta) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.put(journey_key(partition, k), v),
                None => batch.delete(journey_key(partition, k)),
            }
        }
        batch.put(meta_key(partition), meta.encode());
        // No write-ahead log: local state is a cache of the changelog, trusted after a crash
        // only if a clean shutdown persisted it (`persist`); otherwise it is restored.
        let mut wo = rocksdb::WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    fn persist(&self) -> Result<()> {
        self.db.flush().context("cannot flush RocksDB")?;
        Ok(())
    }

    fn meta(&self, partition: i32) -> Result<Option<PartitionMeta>> {
        match self.db.get(meta_key(partition))? {
            Some(v) => Ok(Some(PartitionMeta::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn scan(&self, partition: i32, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        let prefix = partition_prefix(partition);
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            &prefix,
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            f(&k[5..], &v);
        }
        Ok(())
    }

    fn drop_partition(&mut self, partition: i32) -> Result<()> {
        let from = partition_prefix(partition);
        let to = partition_prefix(partition.wrapping_add(1));
        let mut batch = rocksdb::WriteBatch::default();
        if partition == i32::MAX {
            batch.delete_range(from.to_vec(), vec![b'k']);
        } else {
            batch.delete_range(from, to);
        }
        batch.delete(meta_key(partition));
        self.db.write(batch)?;
        Ok(())
    }

    fn journeys(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn usage(&self) -> (u64, f64) {
        (self.live_size(), self.block_cache_hit_ratio())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test body, run against every backend.
    fn exercise(store: &mut dyn JourneyStore) {
        store
            .write(
                3,
                &[
                    (b"a".to_vec(), Some(b"1".to_vec())),
                    (b"b".to_vec(), Some(b"2".to_vec())),
                ],
                &PartitionMeta {
                    stream_time: 7,
                    ..Default::default()
                },
            )
            .unwrap();
        store
            .write(
                4,
                &[(b"a".to_vec(), Some(b"x".to_vec()))],
                &PartitionMeta {
                    stream_time: 9,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(store.get(3, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(4, b"a").unwrap(), Some(b"x".to_vec()));
        assert_eq!(
            store.meta(3).unwrap(),
            Some(PartitionMeta {
                stream_time: 7,
                ..Default::default()
            })
        );
        store
            .write(
                3,
                &[(b"a".to_vec(), None)],
                &PartitionMeta {
                    stream_time: 8,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut seen = Vec::new();
        store
            .scan(3, &mut |k, v| seen.push((k.to_vec(), v.to_vec())))
            .unwrap();
        assert_eq!(seen, vec![(b"b".to_vec(), b"2".to_vec())]);
        store.drop_partition(3).unwrap();
        assert_eq!(store.get(3, b"b").unwrap(), None);
        assert_eq!(store.meta(3).unwrap(), None);
        assert_eq!(store.get(4, b"a").unwrap(), Some(b"x".to_vec()));
    }

    #[test]
    fn memory_store() {
        exercise(&mut MemoryStore::default());
    }

    #[test]
    fn rocks_store() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&mut RocksStore::open(dir.path()).unwrap());
        // Data survives a reopen.
        let mut s = RocksStore::open(&dir.path().join("x")).unwrap();
        s.write(
            1,
            &[(b"k".to_vec(), Some(b"v".to_vec()))],
            &PartitionMeta::default(),
        )
        .unwrap();
        drop(s);
        let s = RocksStore::open(&dir.path().join("x")).unwrap();
        assert_eq!(s.get(1, b"k").unwrap(), Some(b"v".to_vec()));
    }
}

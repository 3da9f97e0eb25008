//! What the validator keeps: every round, every node's verdict as soon as it
//! is known, and the weights. SQLite in WAL mode, one transaction per
//! write: a crash loses at most the node being appraised, and a restarted
//! round skips the nodes it already finished.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::round::NodeReport;
use crate::scoring::NodeResult;

#[derive(Debug, thiserror::Error)]
#[error("validator database: {0}")]
pub struct DbError(String);

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError(e.to_string())
    }
}

impl From<serde_json::Error> for DbError {
    fn from(e: serde_json::Error) -> Self {
        DbError(e.to_string())
    }
}

pub struct Db {
    /// The round writes through this one...
    conn: Mutex<Connection>,
    /// ...and the status pages read through this one, so a dashboard
    /// refresh never holds the lock the round's writes wait on.
    reader: Option<Mutex<Connection>>,
}

/// A round as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoundRow {
    pub id: i64,
    pub epoch: u64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// JSON of the weights and notes, once finished.
    pub result: Option<String>,
}

const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

const ROUND_COLUMNS: &str = "id, epoch, started_at, finished_at, result";

fn round_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RoundRow> {
    Ok(RoundRow {
        id: r.get(0)?,
        epoch: r.get::<_, i64>(1)? as u64,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        result: r.get(4)?,
    })
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL UNIQUE,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    result TEXT
);
CREATE TABLE IF NOT EXISTS nodes (
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    miner_uid INTEGER NOT NULL,
    node TEXT NOT NULL,
    report TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (round_id, miner_uid, node)
);
CREATE TABLE IF NOT EXISTS state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

impl Db {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let bad = |e: rusqlite::Error| DbError(format!("{}: {e}", path.display()));
        let conn = Connection::open(path).map_err(bad)?;
        let mut db = Self::init(conn)?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(bad)?;
        reader.busy_timeout(BUSY_TIMEOUT)?;
        db.reader = Some(Mutex::new(reader));
        Ok(db)
    }

    pub fn in_memory() -> Result<Self, DbError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, DbError> {
        // Another process (a backup, sqlite3) may hold the file briefly:
        // wait for it rather than lose a verdict.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers never block the writer; NORMAL sync is durable
        // across a process crash.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Db {
            conn: Mutex::new(conn),
            reader: None,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The read-only connection (the writer's for an in-memory database).
    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        match &self.reader {
            Some(r) => r.lock().unwrap_or_else(|p| p.into_inner()),
            None => self.conn(),
        }
    }

    /// Keeps `value` under `name` (what a part of the validator carries
    /// across restarts, such as the v5 windows).
    pub fn put_state(&self, name: &str, value: &str) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO state (name, value) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            rusqlite::params![name, value],
        )?;
        Ok(())
    }

    pub fn state(&self, name: &str) -> Result<Option<String>, DbError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .reader()
            .query_row("SELECT value FROM state WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// The round of `epoch`: the unfinished one if a crash left it, or a new one.
    pub fn begin_round(&self, epoch: u64, now: i64) -> Result<RoundRow, DbError> {
        let c = self.conn();
        c.execute(
            "INSERT OR IGNORE INTO rounds (epoch, started_at) VALUES (?1, ?2)",
            params![epoch as i64, now],
        )?;
        let row = c.query_row(
            &format!("SELECT {ROUND_COLUMNS} FROM rounds WHERE epoch = ?1"),
            params![epoch as i64],
            round_row,
        )?;
        Ok(row)
    }

    /// Keep one node's outcome (replacing an earlier one for the same node).
    pub fn node_done(
        &self,
        round_id: i64,
        report: &NodeReport,
        result: &NodeResult,
    ) -> Result<(), DbError> {
        let json = serde_json::to_string(report)?;
        let result = serde_json::to_string(result)?;
        self.conn().execute(
            "INSERT OR REPLACE INTO nodes (round_id, miner_uid, node, report, result) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![round_id, i64::from(report.miner_uid), report.node, json, result],
        )?;
        Ok(())
    }

    /// Drop one node's stored outcome (its miner's uid changed hands).
    pub fn forget_node(&self, round_id: i64, miner_uid: u16, node: &str) -> Result<(), DbError> {
        self.conn().execute(
            "DELETE FROM nodes WHERE round_id = ?1 AND miner_uid = ?2 AND node = ?3",
            params![round_id, i64::from(miner_uid), node],
        )?;
        Ok(())
    }

    /// How many nodes a round has finished.
    pub fn node_count(&self, round_id: i64) -> Result<u64, DbError> {
        let n: i64 = self.reader().query_row(
            "SELECT COUNT(*) FROM nodes WHERE round_id = ?1",
            params![round_id],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// The scoring inputs of the nodes a round already finished.
    pub fn finished_results(&self, round_id: i64) -> Result<Vec<NodeResult>, DbError> {
        let c = self.reader();
        let mut st =
            c.prepare("SELECT result FROM nodes WHERE round_id = ?1 ORDER BY miner_uid, node")?;
        let rows = st.query_map(params![round_id], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?)?);
        }
        Ok(out)
    }

    /// The nodes a round already finished: (miner uid, node, stored report JSON).
    pub fn finished_nodes(&self, round_id: i64) -> Result<Vec<(u16, String, String)>, DbError> {
        let c = self.reader();
        let mut st = c.prepare("SELECT miner_uid, node, report FROM nodes WHERE round_id = ?1 ORDER BY miner_uid, node")?;
        let rows = st.query_map(params![round_id], |r| {
            Ok((r.get::<_, i64>(0)? as u16, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn finish_round(&self, round_id: i64, now: i64, result_json: &str) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE rounds SET finished_at = ?2, result = ?3 WHERE id = ?1 AND finished_at IS NULL",
            params![round_id, now, result_json],
        )?;
        Ok(())
    }

    /// Replace a finished round's result (weights sent later in the epoch).
    pub fn set_result(&self, round_id: i64, result_json: &str) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE rounds SET result = ?2 WHERE id = ?1",
            params![round_id, result_json],
        )?;
        Ok(())
    }

    pub fn rounds(&self, limit: usize) -> Result<Vec<RoundRow>, DbError> {
        let c = self.reader();
        let mut st = c.prepare(&format!(
            "SELECT {ROUND_COLUMNS} FROM rounds ORDER BY epoch DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit as i64], round_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The round of `epoch`, if there is one.
    pub fn round_of(&self, epoch: u64) -> Result<Option<RoundRow>, DbError> {
        let c = self.reader();
        Ok(c.query_row(
            &format!("SELECT {ROUND_COLUMNS} FROM rounds WHERE epoch = ?1"),
            params![epoch as i64],
            round_row,
        )
        .optional()?)
    }

    /// How many rounds have finished.
    pub fn finished_count(&self) -> Result<u64, DbError> {
        let n: i64 = self.reader().query_row(
            "SELECT COUNT(*) FROM rounds WHERE finished_at IS NOT NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// The latest finished round, if any.
    pub fn last_finished(&self) -> Result<Option<RoundRow>, DbError> {
        let c = self.reader();
        Ok(c.query_row(
            &format!("SELECT {ROUND_COLUMNS} FROM rounds WHERE finished_at IS NOT NULL ORDER BY epoch DESC LIMIT 1"),
            [],
            round_row,
        )
        .optional()?)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn named_state_is_kept_and_replaced() {
        let db = Db::in_memory().unwrap();
        assert_eq!(db.state("v5").unwrap(), None);
        db.put_state("v5", "{\"a\":1}").unwrap();
        db.put_state("v5", "{\"a\":2}").unwrap();
        assert_eq!(db.state("v5").unwrap().as_deref(), Some("{\"a\":2}"));
    }
    use super::*;

    fn report(uid: u16, node: &str, error: Option<&str>) -> (NodeReport, NodeResult) {
        (
            NodeReport {
                miner_uid: uid,
                miner_hotkey: String::new(),
                node: node.into(),
                bid: None,
                verdict: None,
                error: error.map(str::to_string),
            },
            NodeResult {
                miner_uid: uid,
                miner_hotkey: String::new(),
                node: node.into(),
                accepted: None,
                cvm_id: None,
                gpus: Vec::new(),
                bid: None,
                simulated: false,
                reasons: Vec::new(),
            },
        )
    }

    fn done(db: &Db, id: i64, (r, n): (NodeReport, NodeResult)) {
        db.node_done(id, &r, &n).unwrap();
    }

    #[test]
    fn a_reopened_database_resumes_the_unfinished_round() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validator.db");
        let id = {
            let db = Db::open(&path).unwrap();
            let r = db.begin_round(7, 100).unwrap();
            done(&db, r.id, report(1, "10.0.0.1", Some("cannot reach")));
            done(&db, r.id, report(2, "10.0.0.2", None));
            r.id
            // dropped here without finishing: a crash
        };
        let db = Db::open(&path).unwrap();
        let r = db.begin_round(7, 200).unwrap();
        assert_eq!(
            (r.id, r.started_at, r.finished_at),
            (id, 100, None),
            "the same round, not a new one"
        );
        let finished = db.finished_nodes(r.id).unwrap();
        assert_eq!(finished.len(), 2);
        assert!(finished[0].2.contains("cannot reach"));
        // Re-recording a node replaces it; finishing is once.
        done(&db, r.id, report(2, "10.0.0.2", Some("later")));
        assert_eq!(db.finished_results(r.id).unwrap().len(), 2);
        assert_eq!(db.finished_nodes(r.id).unwrap().len(), 2);
        db.finish_round(r.id, 300, "{\"weights\":[[0,65535]]}")
            .unwrap();
        db.finish_round(r.id, 400, "{}").unwrap();
        let last = db.last_finished().unwrap().unwrap();
        assert_eq!(
            (last.finished_at, last.result.as_deref()),
            (Some(300), Some("{\"weights\":[[0,65535]]}"))
        );
        assert_eq!(db.begin_round(8, 500).unwrap().epoch, 8);
        assert_eq!(db.finished_count().unwrap(), 1);
        assert_eq!(
            db.rounds(10)
                .unwrap()
                .iter()
                .map(|r| r.epoch)
                .collect::<Vec<_>>(),
            vec![8, 7]
        );
    }
}

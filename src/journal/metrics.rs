//! The journal's metrics, registered by the journal: rows written and dropped, the queue, the
//! time a batch takes, rows deleted by retention or the size cap, and the file's size.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::metrics::{reg, LATENCY_BUCKETS};

/// `tierd_journal_*`.
pub struct JournalMetrics {
    written: IntCounter,
    dropped: IntCounter,
    /// Rows queued for the writer.
    pub queue_depth: IntGauge,
    /// Rows the queue holds at most (`journal.queue_capacity`; 0 while the journal is off).
    pub queue_capacity: IntGauge,
    /// Time to append one batch.
    pub write_seconds: Histogram,
    /// Rows deleted, by reason (retention, size).
    pub deleted: IntCounterVec,
    /// The journal file's size with its WAL.
    pub file_bytes: IntGauge,
    /// 1 while the journal file cannot be opened (rows are dropped meanwhile).
    pub failed: IntGauge,
}

impl JournalMetrics {
    /// Creates the metrics and registers them in `r`, every series present from the start.
    pub fn register(r: &Registry) -> JournalMetrics {
        let rows = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_journal_rows_total",
                    "Journal rows, by outcome: written to the file, or dropped (queue full, \
                     write failed, journal closed)",
                ),
                &["outcome"],
            )
            .expect("static metric definition"),
        );
        let deleted = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_journal_deleted_rows_total",
                    "Journal rows deleted, by reason (retention: older than \
                     journal.retention_days; size: the file passed journal.max_bytes)",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
        );
        for why in ["retention", "size"] {
            deleted.with_label_values(&[why]);
        }
        JournalMetrics {
            written: rows.with_label_values(&["written"]),
            dropped: rows.with_label_values(&["dropped"]),
            queue_depth: reg(
                r,
                IntGauge::new(
                    "tierd_journal_queue_depth",
                    "Journal rows waiting for the writer",
                )
                .expect("static metric definition"),
            ),
            queue_capacity: reg(
                r,
                IntGauge::new(
                    "tierd_journal_queue_capacity",
                    "Journal rows the queue holds at most (journal.queue_capacity); rows past it \
                     are dropped",
                )
                .expect("static metric definition"),
            ),
            write_seconds: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tierd_journal_write_duration_seconds",
                        "Time to append one batch of journal rows",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("static metric definition"),
            ),
            deleted,
            file_bytes: reg(
                r,
                IntGauge::new(
                    "tierd_journal_file_bytes",
                    "The journal file's size on disk with its WAL",
                )
                .expect("static metric definition"),
            ),
            failed: reg(
                r,
                IntGauge::new(
                    "tierd_journal_failed",
                    "1 while the journal file cannot be opened or written (rows are dropped \
                     and counted; the writer retries with backoff)",
                )
                .expect("static metric definition"),
            ),
        }
    }

    /// Counts rows written.
    pub fn written(&self, n: u64) {
        self.written.inc_by(n);
    }

    /// Counts rows dropped.
    pub fn dropped(&self, n: u64) {
        self.dropped.inc_by(n);
    }

    /// Rows written so far.
    pub fn written_total(&self) -> u64 {
        self.written.get()
    }

    /// Rows dropped so far.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.get()
    }
}

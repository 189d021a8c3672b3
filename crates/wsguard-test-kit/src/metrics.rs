//! Captured metrics: a recorder for the `metrics` facade that the code under test writes to,
//! and reads of its series by name and labels, for tests that check what a layer counts (a
//! refusal in `wsguard_rejections_total{layer, reason, mode}`, for example).
//!
//! The recorder is `metrics-exporter-prometheus`'s, the exporter the chat example serves: a
//! test reads the series as Prometheus would scrape them, and a failing assertion can print
//! the whole exposition (`{metrics}`).
//!
//! Where the code under test records decides how the recorder is installed:
//!
//! - [`Metrics::set_local`]: this thread's recorder, until the guard drops. A
//!   `#[tokio::test]` runs on one thread (tokio's `current_thread` runtime), and the servers
//!   and clients it spawns run there too, so the test sees everything they record and
//!   nothing other tests record: several such tests can share a test binary.
//! - [`Metrics::global`]: the process's recorder, installed once. What a multi-threaded
//!   runtime's workers (or any other thread) record reaches it, but so does what every other
//!   test of the binary records: a test that reads it lives alone in its own test binary, as
//!   a test that captures logs does ([`logs`](crate::logs)).
//!
//! ```
//! use wsguard_test_kit::metrics::Metrics;
//!
//! let metrics = Metrics::new();
//! let _local = metrics.set_local();
//! metrics::counter!(
//!     "wsguard_rejections_total",
//!     "layer" => "origin", "reason" => "origin_not_allowed", "mode" => "dry_run",
//! )
//! .increment(2);
//! assert_eq!(
//!     metrics.rejections("origin", "origin_not_allowed", "dry_run"),
//!     2,
//!     "{metrics}"
//! );
//! // Labels in any order; a series never recorded reads 0.
//! assert_eq!(
//!     metrics.counter(
//!         "wsguard_rejections_total",
//!         &[("mode", "dry_run"), ("reason", "origin_not_allowed"), ("layer", "origin")],
//!     ),
//!     2
//! );
//! assert_eq!(metrics.rejections("origin", "origin_not_allowed", "enforce"), 0);
//! // Absent, where a series registered at zero is present.
//! assert!(!metrics.has_series(
//!     "wsguard_rejections_total",
//!     &[("layer", "origin"), ("reason", "origin_not_allowed"), ("mode", "enforce")],
//! ));
//! ```

use std::{
    collections::BTreeSet,
    fmt,
    sync::{Arc, OnceLock},
};

use ::metrics::LocalRecorderGuard;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// The counter every wsguard layer counts its refusals in, labelled `layer`, `reason` and
/// `mode` (`enforce` or `dry_run`).
pub const REJECTIONS_TOTAL: &str = "wsguard_rejections_total";

/// A metrics recorder and reads of what was recorded in it; clones share it.
///
/// See the [module docs](self) for an example.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Metrics {
    /// A fresh recorder, installed nowhere yet: see [`set_local`](Self::set_local).
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
        }
    }

    /// Makes this recorder the current thread's, until the guard drops: for tests on
    /// tokio's `current_thread` runtime (the `#[tokio::test]` default).
    #[must_use = "the recorder is the thread's only while the guard lives"]
    pub fn set_local(&self) -> LocalRecorderGuard<'_> {
        ::metrics::set_default_local_recorder(&*self.recorder)
    }

    /// The process's global recorder, installed at the first call; every call answers the
    /// same one. For code that records on other threads (a multi-threaded runtime); a test
    /// that reads it must live alone in its test binary.
    ///
    /// # Panics
    ///
    /// If another global recorder was installed first.
    pub fn global() -> Self {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let metrics = Self::new();
                if ::metrics::set_global_recorder(Arc::clone(&metrics.recorder)).is_err() {
                    panic!("another global metrics recorder is installed in this test binary");
                }
                metrics
            })
            .clone()
    }

    /// The value of the counter `name` with exactly the labels `labels` (in any order), or 0
    /// when it was never recorded.
    ///
    /// # Panics
    ///
    /// If `name` has series but none with these label names (a misspelt or missing label
    /// would otherwise read 0 for ever), or the series' value is not a whole number.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.find(name, labels) {
            None => 0,
            Some(sample) => sample.value.parse().unwrap_or_else(|_| {
                panic!("{name}{labels:?} is {:?}, not a counter", sample.value)
            }),
        }
    }

    /// The value of the gauge `name` with exactly the labels `labels` (in any order), or 0
    /// when it was never recorded.
    ///
    /// # Panics
    ///
    /// As [`counter`](Self::counter), when the value is not a number.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(name, labels) {
            None => 0.0,
            Some(sample) => sample
                .value
                .parse()
                .unwrap_or_else(|_| panic!("{name}{labels:?} is {:?}, not a gauge", sample.value)),
        }
    }

    /// Whether the series `name` with exactly the labels `labels` (in any order) is in the
    /// exposition: registered (at zero, say), where [`counter`](Self::counter) and
    /// [`gauge`](Self::gauge) answer 0 for a series that is absent too.
    ///
    /// # Panics
    ///
    /// As [`counter`](Self::counter), when `name` has series but none with these label
    /// names.
    pub fn has_series(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.find(name, labels).is_some()
    }

    /// `wsguard_rejections_total{layer, reason, mode}`: the refusals of `layer` for `reason`
    /// in `mode` (`enforce` or `dry_run`), 0 when none was counted.
    ///
    /// # Panics
    ///
    /// As [`counter`](Self::counter).
    pub fn rejections(&self, layer: &str, reason: &str, mode: &str) -> u64 {
        self.counter(
            REJECTIONS_TOTAL,
            &[("layer", layer), ("reason", reason), ("mode", mode)],
        )
    }

    /// Everything recorded so far, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The series `name{labels}`, if it was recorded.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<Sample> {
        let wanted: BTreeSet<(&str, &str)> = labels.iter().copied().collect();
        let keys: BTreeSet<&str> = labels.iter().map(|(key, _)| *key).collect();
        let text = self.render();
        let samples: Vec<Sample> = text
            .lines()
            .filter_map(Sample::parse)
            .filter(|sample| sample.name == name)
            .collect();
        let found = samples.iter().find(|sample| sample.labels() == wanted);
        if found.is_none() && !samples.is_empty() {
            assert!(
                samples.iter().any(|sample| sample.keys() == keys),
                "no series of {name} has exactly the labels {keys:?}:\n{text}"
            );
        }
        found.cloned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The exposition ([`Metrics::render`]), for failure messages.
impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// One line of a Prometheus text exposition: `name{key="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: String,
}

impl Sample {
    /// The sample on `line`; `None` for a comment, a blank or a malformed line.
    fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let name_end = line.find(['{', ' '])?;
        let name = line[..name_end].to_owned();
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(body) = rest.strip_prefix('{') {
            rest = body;
            loop {
                rest = rest.trim_start_matches(',');
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = rest.split_once("=\"")?;
                let (value, after) = unescape_until_quote(after)?;
                labels.push((key.to_owned(), value));
                rest = after;
            }
        }
        // A sample line may end with a timestamp after the value.
        let value = rest.split_whitespace().next()?.to_owned();
        Some(Self {
            name,
            labels,
            value,
        })
    }

    fn labels(&self) -> BTreeSet<(&str, &str)> {
        self.labels
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect()
    }

    fn keys(&self) -> BTreeSet<&str> {
        self.labels.iter().map(|(key, _)| key.as_str()).collect()
    }
}

/// A label value up to its closing quote, unescaped (`\\`, `\"`, `\n`), and what follows it.
fn unescape_until_quote(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                escaped => value.push(escaped),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample expected: name, labels, value.
    type Expected = Option<(
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
    )>;

    #[test]
    fn samples_are_parsed_with_their_labels_unescaped() {
        // Lines of metrics-exporter-prometheus's exposition (and the format's escapes).
        let cases: &[(&str, Expected)] = &[
            ("# TYPE wsguard_rejections_total counter", None),
            ("", None),
            ("up 1", Some(("up", &[], "1"))),
            (
                r#"wsguard_rejections_total{layer="origin",mode="dry_run"} 3"#,
                Some((
                    "wsguard_rejections_total",
                    &[("layer", "origin"), ("mode", "dry_run")],
                    "3",
                )),
            ),
            (
                r#"odd{v="a \"quoted\" \\ value, with } and \n"} 2.5 1700000000"#,
                Some((
                    "odd",
                    &[("v", "a \"quoted\" \\ value, with } and \n")],
                    "2.5",
                )),
            ),
            (r#"broken{v="unterminated} 1"#, None),
        ];
        for (line, expected) in cases {
            let expected = expected.map(|(name, labels, value)| Sample {
                name: name.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                value: value.to_owned(),
            });
            assert_eq!(Sample::parse(line), expected, "{line}");
        }
    }

    #[test]
    fn series_are_read_by_exact_labels_in_any_order() {
        let metrics = Metrics::new();
        let _local = metrics.set_local();
        ::metrics::counter!("c_total", "a" => "1", "b" => "2").increment(3);
        ::metrics::counter!("c_total", "a" => "1", "b" => "other").increment(1);
        ::metrics::counter!("c_total_more", "a" => "1", "b" => "2").increment(9);
        ::metrics::gauge!("g", "a" => "1").set(-1.5);

        assert_eq!(metrics.counter("c_total", &[("b", "2"), ("a", "1")]), 3);
        assert_eq!(metrics.counter("c_total", &[("a", "1"), ("b", "other")]), 1);
        assert_eq!(metrics.counter("c_total", &[("a", "1"), ("b", "none")]), 0);
        assert_eq!(metrics.counter("never", &[("a", "1")]), 0);
        assert_eq!(metrics.gauge("g", &[("a", "1")]), -1.5);
        assert!(metrics.to_string().contains("c_total_more"));
    }

    #[test]
    #[should_panic(expected = "no series of c_total has exactly the labels")]
    fn a_misspelt_label_panics_rather_than_reading_zero() {
        let metrics = Metrics::new();
        let _local = metrics.set_local();
        ::metrics::counter!("c_total", "layer" => "origin").increment(1);
        metrics.counter("c_total", &[("lyer", "origin")]);
    }

    #[test]
    fn rejections_read_the_shared_counter() {
        let metrics = Metrics::new();
        let _local = metrics.set_local();
        ::metrics::counter!(
            REJECTIONS_TOTAL, "layer" => "msg_rate", "reason" => "rate_exceeded", "mode" => "enforce"
        )
        .increment(5);
        assert_eq!(
            metrics.rejections("msg_rate", "rate_exceeded", "enforce"),
            5
        );
        assert_eq!(
            metrics.rejections("msg_rate", "rate_exceeded", "dry_run"),
            0
        );
    }

    #[test]
    fn another_thread_records_into_the_global_recorder_only() {
        let local = Metrics::new();
        let _local = local.set_local();
        let global = Metrics::global();
        std::thread::spawn(|| ::metrics::counter!("from_a_thread_total").increment(1))
            .join()
            .unwrap();
        assert_eq!(global.counter("from_a_thread_total", &[]), 1);
        assert_eq!(Metrics::global().counter("from_a_thread_total", &[]), 1);
        assert_eq!(local.counter("from_a_thread_total", &[]), 0);
    }
}

//! Rates, budgets and configuration errors.

use std::{fmt, num::NonZeroU32, time::Duration};

use governor::Quota;

/// The start of a rate: `rate(10).per(Duration::from_secs(1))` is ten per second.
///
/// `n` counts messages in a message budget and bytes in a byte budget. See
/// [`Budget`] for an example.
pub const fn rate(n: u32) -> RateBuilder {
    RateBuilder { n }
}

/// A count waiting for its period; see [`rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a rate needs its period: rate(n).per(duration)"]
pub struct RateBuilder {
    n: u32,
}

impl RateBuilder {
    /// `n` per `period`, with a burst of `n`.
    pub const fn per(self, period: Duration) -> Rate {
        Rate {
            n: self.n,
            period,
            burst: None,
        }
    }
}

/// A sustained rate and a burst: `rate(n).per(period).burst(b)`.
///
/// The budget refills continuously, one unit every `period / n` (GCRA, as implemented by
/// the `governor` crate), and holds at most `burst` units, so `burst` units pass at once
/// after a quiet spell and then one every `period / n`. The burst defaults to `n`.
///
/// See [`Budget`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    n: u32,
    period: Duration,
    burst: Option<u32>,
}

impl Rate {
    /// How many units may pass at once (default: the rate's `n`).
    #[must_use]
    pub const fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The `n` of `rate(n)`.
    pub const fn count(&self) -> u32 {
        self.n
    }

    /// The period of `per(period)`.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The burst size.
    pub const fn burst_size(&self) -> u32 {
        match self.burst {
            Some(burst) => burst,
            None => self.n,
        }
    }

    /// The governor quota of this rate.
    pub(crate) fn quota(&self, what: &'static str) -> Result<Quota, ConfigError> {
        if self.n == 0 || self.period.is_zero() {
            return Err(ConfigError::ZeroRate(what));
        }
        let burst = NonZeroU32::new(self.burst_size()).ok_or(ConfigError::ZeroBurst(what))?;
        // One unit every `period / n`, in whole nanoseconds (governor's resolution).
        let per_unit = self.period.as_nanos() / u128::from(self.n);
        if per_unit == 0 {
            return Err(ConfigError::RateTooHigh(what));
        }
        // governor keeps times as u64 nanoseconds; keep the whole burst window far from
        // overflowing them (2^62 ns is about 146 years).
        if per_unit.saturating_mul(u128::from(burst.get())) > 1 << 62 {
            return Err(ConfigError::WindowTooLong(what));
        }
        let per_unit = u64::try_from(per_unit).map_err(|_| ConfigError::WindowTooLong(what))?;
        Quota::with_period(Duration::from_nanos(per_unit))
            .map(|q| q.allow_burst(burst))
            .ok_or(ConfigError::ZeroRate(what))
    }
}

/// What a scope (one connection, or one key) may spend: a message rate, a byte rate, or
/// both.
///
/// ```
/// use std::time::Duration;
/// use wsguard_msg_rate::{rate, Budget};
///
/// let budget = Budget::new()
///     // 10 messages per second, 20 at once
///     .messages(rate(10).per(Duration::from_secs(1)).burst(20))
///     // 64 KiB per second, 256 KiB at once
///     .bytes(rate(64 * 1024).per(Duration::from_secs(1)).burst(256 * 1024));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    messages: Option<Rate>,
    bytes: Option<Rate>,
}

impl Budget {
    /// A budget that limits nothing yet.
    pub const fn new() -> Self {
        Self {
            messages: None,
            bytes: None,
        }
    }

    /// Limits the number of data messages.
    #[must_use]
    pub const fn messages(mut self, rate: Rate) -> Self {
        self.messages = Some(rate);
        self
    }

    /// Limits the payload bytes of data messages. A single message larger than the burst
    /// can never fit: it closes the socket with 1009 (message too large).
    #[must_use]
    pub const fn bytes(mut self, rate: Rate) -> Self {
        self.bytes = Some(rate);
        self
    }

    /// The message rate, if any.
    pub const fn message_rate(&self) -> Option<Rate> {
        self.messages
    }

    /// The byte rate, if any.
    pub const fn byte_rate(&self) -> Option<Rate> {
        self.bytes
    }

    pub(crate) fn quotas(&self) -> Result<Quotas, ConfigError> {
        if self.messages.is_none() && self.bytes.is_none() {
            return Err(ConfigError::EmptyBudget);
        }
        Ok(Quotas {
            messages: self.messages.map(|r| r.quota("message")).transpose()?,
            bytes: self.bytes.map(|r| r.quota("byte")).transpose()?,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Quotas {
    pub(crate) messages: Option<Quota>,
    pub(crate) bytes: Option<Quota>,
}

/// A configuration that cannot work, returned when the layer or store is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A rate of zero units, or over a zero period (`"message"`, `"byte"` or `"refusal"`).
    ZeroRate(&'static str),
    /// A burst of zero: nothing could ever pass.
    ZeroBurst(&'static str),
    /// More than one unit per nanosecond, governor's resolution.
    RateTooHigh(&'static str),
    /// A burst whose refill takes longer than about a century.
    WindowTooLong(&'static str),
    /// A [`Budget`] with neither a message nor a byte rate.
    EmptyBudget,
    /// A key store capped at zero keys.
    ZeroMaxKeys,
    /// A key store swept every zero seconds.
    ZeroSweepInterval,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroRate(what) => write!(f, "the {what} rate is zero"),
            Self::ZeroBurst(what) => write!(f, "the {what} burst is zero"),
            Self::RateTooHigh(what) => {
                write!(f, "the {what} rate exceeds one unit per nanosecond")
            }
            Self::WindowTooLong(what) => {
                write!(f, "the {what} burst takes over a century to refill")
            }
            Self::EmptyBudget => f.write_str("a budget needs a message rate, a byte rate or both"),
            Self::ZeroMaxKeys => f.write_str("a key store must hold at least one key"),
            Self::ZeroSweepInterval => f.write_str("the sweep interval is zero"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_quotas_or_errors() {
        let secs = Duration::from_secs;
        let q = rate(10).per(secs(1)).quota("message").unwrap();
        assert_eq!(q.replenish_interval(), Duration::from_millis(100));
        assert_eq!(q.burst_size().get(), 10);
        let q = rate(10).per(secs(1)).burst(3).quota("message").unwrap();
        assert_eq!(q.burst_size().get(), 3);
        let q = rate(1).per(secs(60)).quota("message").unwrap();
        assert_eq!(q.replenish_interval(), secs(60));
        // A billion bytes per second is one per nanosecond, the finest governor counts.
        let q = rate(1_000_000_000).per(secs(1)).quota("byte").unwrap();
        assert_eq!(q.replenish_interval(), Duration::from_nanos(1));

        let cases = [
            (rate(0).per(secs(1)), ConfigError::ZeroRate("message")),
            (
                rate(1).per(Duration::ZERO),
                ConfigError::ZeroRate("message"),
            ),
            (
                rate(1).per(secs(1)).burst(0),
                ConfigError::ZeroBurst("message"),
            ),
            (
                rate(u32::MAX).per(secs(1)),
                ConfigError::RateTooHigh("message"),
            ),
            (
                rate(1).per(secs(86_400 * 365)).burst(1_000),
                ConfigError::WindowTooLong("message"),
            ),
        ];
        for (rate, err) in cases {
            assert_eq!(rate.quota("message"), Err(err), "{rate:?}");
        }
        assert_eq!(
            Budget::new().quotas().unwrap_err(),
            ConfigError::EmptyBudget
        );
    }
}

//! GCRA in one Lua script on Redis's clock: [`Gcra`], the lower-level limiter that
//! [`RedisKeyStore`](crate::RedisKeyStore) runs for each message.

use std::{sync::LazyLock, time::Duration};

use redis::{aio::ConnectionLike, RedisResult, Script};
use wsguard_msg_rate::Rate;

use crate::fleet::ConfigError;

/// GCRA over one or two rates kept in one hash key (one field per rate), all or nothing:
/// the cost is spent from every rate or from none.
///
/// Times are microseconds as Lua numbers (doubles: exact to a quarter of a microsecond at
/// today's epoch), from Redis `TIME`. Per rate i (ARGV offset 1 + 5(i-1)): field, emission
/// interval, tolerance (emission interval x burst), cost, extra (cells to reserve beyond
/// the cost, at most a quarter of what would remain). A stored time more than one tolerance
/// ahead of `TIME` (a failover to a replica whose clock is behind) is capped to one
/// tolerance. The key expires when every rate is full again (rounded up to the next
/// millisecond).
///
/// Returns {allowed, remaining, retry_after_us (-1: allowed), reset_after_us, too_large,
/// granted extra of rate 1, granted extra of rate 2}; remaining, retry and reset are those
/// of the first rate whose burst the cost exceeds, else of the first rate that refused,
/// else of the first rate.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local rates = {}
local refused = 0
local big = 0
for i = 1, n do
  local b = 1 + (i - 1) * 5
  local r = {
    field = ARGV[b + 1],
    ei = tonumber(ARGV[b + 2]),
    tol = tonumber(ARGV[b + 3]),
    cost = tonumber(ARGV[b + 4]),
    extra = tonumber(ARGV[b + 5]),
    grant = 0,
  }
  local stored = redis.call('HGET', KEYS[1], r.field)
  local tat = now
  if stored then tat = tonumber(stored) end
  if tat < now then tat = now end
  if tat > now + r.tol then tat = now + r.tol end
  r.tat = tat
  r.new_tat = tat + r.ei * r.cost
  if now - (r.new_tat - r.tol) < 0 and refused == 0 then refused = i end
  if r.ei * r.cost > r.tol and big == 0 then big = i end
  rates[i] = r
end
if big > 0 then refused = big end
if refused > 0 then
  local r = rates[refused]
  local too_large = 0
  if r.ei * r.cost > r.tol then too_large = 1 end
  local remaining = math.floor((r.tol - (r.tat - now)) / r.ei)
  if remaining < 0 then remaining = 0 end
  local retry = math.ceil((r.new_tat - r.tol) - now)
  return {0, remaining, retry, math.ceil(r.tat - now), too_large, 0, 0}
end
local longest = 0
for i = 1, n do
  local r = rates[i]
  if r.extra > 0 then
    local left = math.floor((r.tol - (r.new_tat - now)) / r.ei)
    local grant = math.min(r.extra, math.floor(left / 4))
    if grant > 0 then
      r.grant = grant
      r.new_tat = r.new_tat + r.ei * grant
    end
  end
  if r.new_tat - now > longest then longest = r.new_tat - now end
  if r.new_tat > now then
    redis.call('HSET', KEYS[1], r.field, string.format('%.17g', r.new_tat))
  end
end
if longest > 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(longest / 1000))
end
local first = rates[1]
local remaining = math.floor((first.tol - (first.new_tat - now)) / first.ei)
if remaining < 0 then remaining = 0 end
local g2 = 0
if n > 1 then g2 = rates[2].grant end
return {1, remaining, -1, math.ceil(first.new_tat - now), 0, first.grant, g2}
",
    )
});

/// One GCRA rate in the script's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateArgs {
    emission_us: f64,
    tolerance_us: f64,
}

impl RateArgs {
    pub(crate) fn new(rate: Rate) -> Result<Self, ConfigError> {
        if rate.count() == 0 {
            return Err(ConfigError::ZeroCount("a rate's count"));
        }
        if rate.burst_size() == 0 {
            return Err(ConfigError::ZeroCount("a rate's burst"));
        }
        if rate.period().is_zero() {
            return Err(ConfigError::ZeroDuration("a rate's period"));
        }
        let emission_us = rate.period().as_secs_f64() * 1e6 / f64::from(rate.count());
        Ok(Self {
            emission_us,
            tolerance_us: emission_us * f64::from(rate.burst_size()),
        })
    }
}

/// One rate's part of a script call.
pub(crate) struct Part<'a> {
    pub(crate) field: &'a str,
    pub(crate) rate: RateArgs,
    pub(crate) cost: u64,
    pub(crate) extra: u64,
}

/// The script's raw answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
    pub(crate) retry_us: Option<u64>,
    pub(crate) reset_us: u64,
    pub(crate) too_large: bool,
    pub(crate) granted: [u64; 2],
}

pub(crate) async fn run<C: ConnectionLike>(
    conn: &mut C,
    key: &[u8],
    parts: &[Part<'_>],
) -> RedisResult<Raw> {
    let mut call = GCRA.key(key);
    call.arg(parts.len());
    for part in parts {
        call.arg(part.field)
            .arg(part.rate.emission_us)
            .arg(part.rate.tolerance_us)
            .arg(part.cost)
            .arg(part.extra);
    }
    let v: Vec<i64> = call.invoke_async(conn).await?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let unsigned = |x: i64| u64::try_from(x).unwrap_or(0);
    Ok(Raw {
        allowed: at(0) == 1,
        remaining: unsigned(at(1)),
        retry_us: (at(0) != 1).then(|| unsigned(at(2))),
        reset_us: unsigned(at(3)),
        too_large: at(4) == 1,
        granted: [unsigned(at(5)), unsigned(at(6))],
    })
}

/// A generic cell rate limiter whose state lives in Redis: the algorithm behind
/// [`RedisKeyStore`](crate::RedisKeyStore), for any cost, answering with what remains.
///
/// One Lua script per call, touching one key (safe for Redis Cluster), with Redis's own
/// clock (`TIME`): every instance of a fleet sees the same time. It gives the answers of
/// redis-cell's `CL.THROTTLE` and go-redis/redis_rate's `AllowN` (both are tested against
/// their published vectors): a rate `rate(n).per(period).burst(b)` refills one cell every
/// `period / n` and holds `b`; a cost of zero peeks without spending.
///
/// This is the lower level: no deadline, no circuit, no failure policy; [`Gcra::apply`]
/// returns Redis's error as is. See the [crate docs](crate) for the stores built on it.
///
/// ```no_run
/// # async fn demo(mut conn: redis::aio::MultiplexedConnection) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use wsguard_msg_rate::rate;
/// use wsguard_redis::Gcra;
///
/// let uploads = Gcra::new(rate(10).per(Duration::from_secs(1)).burst(10))?;
/// let outcome = uploads.apply(&mut conn, b"app:uploads:alice", 2).await?;
/// assert!(outcome.allowed());
/// assert_eq!(outcome.remaining(), 8);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gcra {
    rate: RateArgs,
}

impl Gcra {
    /// A limiter for `rate`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroCount`] or [`ConfigError::ZeroDuration`] for a rate that cannot
    /// work.
    pub fn new(rate: Rate) -> Result<Self, ConfigError> {
        Ok(Self {
            rate: RateArgs::new(rate)?,
        })
    }

    /// Spends `cost` cells of `key`'s budget if they are there; a `cost` of zero only reads.
    ///
    /// The key is used as given (add your own prefix).
    ///
    /// # Errors
    ///
    /// Redis's error, when the call fails.
    pub async fn apply<C: ConnectionLike>(
        &self,
        conn: &mut C,
        key: &[u8],
        cost: u64,
    ) -> RedisResult<GcraOutcome> {
        let raw = run(
            conn,
            key,
            &[Part {
                field: "t",
                rate: self.rate,
                cost,
                extra: 0,
            }],
        )
        .await?;
        Ok(GcraOutcome {
            allowed: raw.allowed,
            remaining: raw.remaining,
            retry_after: raw.retry_us.map(Duration::from_micros),
            reset_after: Duration::from_micros(raw.reset_us),
            exceeds_burst: raw.too_large,
        })
    }
}

/// What a [`Gcra`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraOutcome {
    allowed: bool,
    remaining: u64,
    retry_after: Option<Duration>,
    reset_after: Duration,
    exceeds_burst: bool,
}

impl GcraOutcome {
    /// Whether the cost was spent.
    pub const fn allowed(&self) -> bool {
        self.allowed
    }

    /// Whole cells left after this call (redis-cell's and redis_rate's `remaining`).
    pub const fn remaining(&self) -> u64 {
        self.remaining
    }

    /// For a refused cost, how long until the budget would hold it (computed as redis_rate
    /// does, even for a cost larger than the burst); `None` when allowed.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// How long until the budget is full again (`reset_after`).
    pub const fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// Whether the cost is larger than the burst, so that it can never be allowed
    /// (redis-cell answers a retry of -1 then).
    pub const fn exceeds_burst(&self) -> bool {
        self.exceeds_burst
    }
}

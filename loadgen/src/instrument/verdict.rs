//! Whether a run did what was asked, as an exit status a script can test, the way load tools
//! scripted in CI are expected to behave: 0 only for a run that did what was asked.
//!
//! Why this shape: one function reads the report against the plan's [`Criteria`] and names
//! the most serious failure; the binary turns it into its exit status and one line on stderr,
//! and the library's users get the same judgement.

use crate::instrument::plan::Criteria;
use crate::instrument::report::{Report, RunReport};

/// The judgement of a run, most serious failure first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Verdict {
    /// Every phase did what was asked.
    Pass,
    /// The user stopped the run (Ctrl-C) before it ended.
    Interrupted,
    /// Two open connections to one server held the same slot: the server is broken.
    InvariantViolated {
        /// Times it was seen.
        violations: u64,
    },
    /// More handshakes failed than the criteria allow (or a phase stopped early because every
    /// attempt failed).
    TooManyErrors {
        /// The phase.
        phase: &'static str,
        /// Failed handshakes.
        errors: u64,
        /// Handshakes attempted.
        attempted: u64,
        /// The share allowed.
        allowed: f64,
        /// Why the phase stopped early, if it did.
        stopped_early: Option<String>,
    },
    /// A phase ran but measured nothing: no handshake was recorded after its warmup, or a
    /// hold ended holding no connection.
    NothingMeasured {
        /// The phase.
        phase: &'static str,
        /// What is missing, and the likely cause.
        why: String,
    },
    /// An open-loop phase completed less than 95 % of its target rate.
    RateNotAchieved {
        /// The phase.
        phase: &'static str,
        /// Handshakes per second asked for.
        target: f64,
        /// Handshakes per second completed.
        achieved: f64,
    },
}

/// Exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

impl Verdict {
    /// Whether the run passed.
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }

    /// The binary's exit status: 0 pass, 1 nothing measured (as a run that could not be done
    /// at all), 3 too many errors, 4 rate not achieved, 5 slot invariant violated, 130
    /// interrupted. (2 is a command line that could not be parsed.)
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::NothingMeasured { .. } => 1,
            Verdict::TooManyErrors { .. } => 3,
            Verdict::RateNotAchieved { .. } => 4,
            Verdict::InvariantViolated { .. } => 5,
            Verdict::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Pass => write!(f, "every phase did what was asked"),
            Verdict::Interrupted => write!(f, "interrupted (Ctrl-C): the results are partial"),
            Verdict::InvariantViolated { violations } => write!(
                f,
                "slot invariant violated {violations} time(s): two open connections held one slot"
            ),
            Verdict::TooManyErrors {
                phase,
                stopped_early: Some(reason),
                ..
            } => write!(f, "{phase} stopped: {reason}"),
            Verdict::TooManyErrors {
                phase,
                errors,
                attempted,
                allowed,
                ..
            } => write!(
                f,
                "{phase}: {errors} of {attempted} handshakes failed ({:.3} %), more than \
                 --max-error-rate allows ({:.3} %)",
                *errors as f64 * 100.0 / (*attempted).max(1) as f64,
                allowed * 100.0
            ),
            Verdict::NothingMeasured { phase, why } => write!(f, "{phase}: {why}"),
            Verdict::RateNotAchieved {
                phase,
                target,
                achieved,
            } => write!(
                f,
                "{phase}: rate not achieved: {achieved:.0}/s of the {target:.0}/s asked"
            ),
        }
    }
}

impl Report {
    /// Judges the run against `criteria`; the most serious failure wins (a broken invariant,
    /// then an interruption, errors, a phase that measured nothing, a rate not achieved).
    pub fn verdict(&self, criteria: &Criteria) -> Verdict {
        let violations: u64 = self.runs.iter().map(|r| r.invariant.violations).sum();
        if violations > 0 {
            return Verdict::InvariantViolated { violations };
        }
        if self.interrupted {
            return Verdict::Interrupted;
        }
        for r in &self.runs {
            let rate = r.errors.total as f64 / r.attempted.max(1) as f64;
            if r.stopped_early.is_some() || rate > criteria.max_error_rate {
                return Verdict::TooManyErrors {
                    phase: r.scenario,
                    errors: r.errors.total,
                    attempted: r.attempted,
                    allowed: criteria.max_error_rate,
                    stopped_early: r.stopped_early.clone(),
                };
            }
        }
        if let Some((phase, why)) = self
            .runs
            .iter()
            .find_map(|r| Some((r.scenario, r.unmeasured()?)))
        {
            return Verdict::NothingMeasured { phase, why };
        }
        for r in &self.runs {
            if let Some(rate) = r.rate.as_ref().filter(|rate| !rate.achieved) {
                return Verdict::RateNotAchieved {
                    phase: r.scenario,
                    target: rate.target_per_s,
                    achieved: rate.achieved_per_s,
                };
            }
        }
        Verdict::Pass
    }
}

impl RunReport {
    /// Why this phase measured nothing, if it did not: no handshake recorded after the
    /// warmup, or a hold that ended holding no connection, with no error counted either
    /// (errors the criteria allow are a measurement).
    fn unmeasured(&self) -> Option<String> {
        if self.errors.total > 0 {
            return None;
        }
        if self.recorded == 0 {
            return Some(if self.succeeded > 0 {
                format!(
                    "no handshake recorded: all {} succeeded within the {} s warmup; shorten \
                     --warmup or run longer",
                    self.succeeded, self.warmup_s
                )
            } else {
                format!(
                    "no handshake recorded: each of the {} attempts was reset on purpose \
                     before its slot line",
                    self.attempted
                )
            });
        }
        match &self.hold {
            Some(hold) if hold.held == 0 => Some(format!(
                "held none of the {} connections at the end of the hold ({} closed by the \
                 server{})",
                hold.requested,
                hold.closed_by_server,
                match &self.resets {
                    Some(resets) if resets.total > 0 =>
                        format!(", {} reset on purpose", resets.total),
                    _ => String::new(),
                }
            )),
            _ => None,
        }
    }
}

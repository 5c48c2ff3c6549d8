//! Consul's `SuccessBeforePassing`, `FailuresBeforeWarning` and `FailuresBeforeCritical`: how
//! many results in a row it takes before a check's reported status changes.
//!
//! Pure logic: feed each probe result to [`Debounce::observe`] and report what it returns.
//!
//! The rules, as Consul's agent applies them:
//!
//! - Passing and warning results are successes; anything else (critical, and maintenance, which
//!   probes never produce) is a failure. A success resets the failure count and vice versa.
//! - After `success_before_passing` successes in a row the result is reported as it is (so a
//!   warning is reported as warning). 0 and 1 both mean at once.
//! - After `failures_before_critical` failures in a row the result is reported as it is;
//!   before that, from `failures_before_warning` failures in a row, warning is reported.
//!   `failures_before_warning` of 0 means "same as `failures_before_critical`" (Consul's
//!   default), so there is no warning step; a value above `failures_before_critical` never
//!   gets a turn either.
//! - Below its threshold, a result changes nothing: the previous status stays.
//!
//! One difference: Consul's agent starts its counters *at* the thresholds, so the first result
//! after a check is registered is reported at once, whatever the thresholds (the surprise in
//! hashicorp/nomad#9189). Here the counters start at zero and the caller's `initial` status
//! holds until a threshold is met, which is what the settings promise: a new instance with
//! `success_before_passing = 3` is not passing before its third good probe. A caller that wants
//! Consul's first-result-wins behaviour can create the `Debounce` after the first result, with
//! that result as `initial`.

use crate::HealthStatus;

/// The counters of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Debounce {
    success_before_passing: u32,
    failures_before_warning: u32,
    failures_before_critical: u32,
    successes: u32,
    failures: u32,
    status: HealthStatus,
}

impl Debounce {
    /// Thresholds as configured on the check (0 for "unset"), and the status it has now.
    pub fn new(
        success_before_passing: u32,
        failures_before_warning: u32,
        failures_before_critical: u32,
        initial: HealthStatus,
    ) -> Self {
        let failures_before_warning =
            if failures_before_warning == 0 { failures_before_critical } else { failures_before_warning };
        Debounce {
            success_before_passing,
            failures_before_warning,
            failures_before_critical,
            successes: 0,
            failures: 0,
            status: initial,
        }
    }

    /// Feeds one probe result; returns the status to report now.
    pub fn observe(&mut self, result: HealthStatus) -> HealthStatus {
        match result {
            HealthStatus::Passing | HealthStatus::Warning => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                if self.successes >= self.success_before_passing {
                    self.status = result;
                }
            }
            HealthStatus::Critical | HealthStatus::Maintenance => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                if self.failures >= self.failures_before_critical {
                    self.status = result;
                } else if self.failures >= self.failures_before_warning {
                    self.status = HealthStatus::Warning;
                }
            }
        }
        self.status
    }

    /// The status last reported (the initial one before any result).
    pub fn status(&self) -> HealthStatus {
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::{Critical, Maintenance, Passing, Warning};

    /// Feeds `results` in order and returns what each one reported.
    fn feed(debounce: &mut Debounce, results: &[HealthStatus]) -> Vec<HealthStatus> {
        results.iter().map(|result| debounce.observe(*result)).collect()
    }

    #[test]
    fn zero_thresholds_report_every_result_at_once() {
        let mut debounce = Debounce::new(0, 0, 0, Critical);
        assert_eq!(debounce.status(), Critical);
        assert_eq!(
            feed(&mut debounce, &[Passing, Critical, Warning, Passing, Critical, Critical]),
            [Passing, Critical, Warning, Passing, Critical, Critical]
        );
    }

    #[test]
    fn thresholds_of_one_behave_like_zero() {
        let mut zero = Debounce::new(0, 0, 0, Critical);
        let mut one = Debounce::new(1, 1, 1, Critical);
        let results = [Passing, Critical, Warning, Critical, Passing, Passing, Critical];
        assert_eq!(feed(&mut one, &results), feed(&mut zero, &results));
    }

    #[test]
    fn passing_needs_consecutive_successes() {
        let mut debounce = Debounce::new(3, 0, 0, Critical);
        assert_eq!(feed(&mut debounce, &[Passing, Passing, Passing, Passing]), [Critical, Critical, Passing, Passing]);
    }

    #[test]
    fn a_failure_restarts_the_success_count() {
        let mut debounce = Debounce::new(3, 0, 0, Critical);
        assert_eq!(
            feed(&mut debounce, &[Passing, Passing, Critical, Passing, Passing, Passing]),
            [Critical, Critical, Critical, Critical, Critical, Passing]
        );
    }

    #[test]
    fn warnings_count_as_successes_and_are_reported_as_warning() {
        let mut debounce = Debounce::new(2, 0, 0, Critical);
        assert_eq!(feed(&mut debounce, &[Warning, Passing, Warning]), [Critical, Passing, Warning]);

        let mut debounce = Debounce::new(2, 0, 0, Critical);
        assert_eq!(feed(&mut debounce, &[Passing, Warning]), [Critical, Warning]);
    }

    #[test]
    fn critical_needs_consecutive_failures() {
        let mut debounce = Debounce::new(0, 0, 3, Passing);
        assert_eq!(
            feed(&mut debounce, &[Critical, Critical, Critical, Critical]),
            [Passing, Passing, Critical, Critical]
        );
    }

    #[test]
    fn a_success_restarts_the_failure_count() {
        let mut debounce = Debounce::new(0, 0, 2, Passing);
        assert_eq!(
            feed(&mut debounce, &[Critical, Passing, Critical, Warning, Critical, Critical]),
            [Passing, Passing, Passing, Warning, Warning, Critical]
        );
    }

    #[test]
    fn failures_give_warning_before_critical() {
        let mut debounce = Debounce::new(0, 2, 4, Passing);
        assert_eq!(
            feed(&mut debounce, &[Critical, Critical, Critical, Critical, Critical]),
            [Passing, Warning, Warning, Critical, Critical]
        );
    }

    #[test]
    fn warning_threshold_defaults_to_the_critical_one() {
        let mut debounce = Debounce::new(0, 0, 3, Passing);
        assert_eq!(feed(&mut debounce, &[Critical, Critical, Critical]), [Passing, Passing, Critical]);
    }

    #[test]
    fn warning_threshold_above_the_critical_one_never_applies() {
        let mut debounce = Debounce::new(0, 5, 2, Passing);
        assert_eq!(feed(&mut debounce, &[Critical, Critical, Critical]), [Passing, Critical, Critical]);
    }

    #[test]
    fn immediate_warning_then_delayed_critical() {
        let mut debounce = Debounce::new(0, 1, 3, Passing);
        assert_eq!(feed(&mut debounce, &[Critical, Critical, Critical]), [Warning, Warning, Critical]);
    }

    #[test]
    fn recovery_from_warning_step_needs_the_success_threshold() {
        let mut debounce = Debounce::new(2, 1, 3, Passing);
        assert_eq!(
            feed(&mut debounce, &[Critical, Passing, Passing, Critical, Critical, Critical]),
            [Warning, Warning, Passing, Warning, Warning, Critical]
        );
    }

    #[test]
    fn both_thresholds_flap_protection() {
        // A check flapping every other probe never moves off its status.
        let mut debounce = Debounce::new(2, 0, 2, Passing);
        let flapping = [Critical, Passing].repeat(5);
        assert!(feed(&mut debounce, &flapping).iter().all(|status| *status == Passing));

        let mut debounce = Debounce::new(2, 0, 2, Critical);
        assert!(feed(&mut debounce, &flapping).iter().all(|status| *status == Critical));
    }

    #[test]
    fn initial_status_holds_until_a_threshold_is_met() {
        for initial in [Passing, Warning, Critical, Maintenance] {
            let mut debounce = Debounce::new(2, 2, 2, initial);
            assert_eq!(debounce.status(), initial);
            assert_eq!(debounce.observe(Passing), initial);
            assert_eq!(debounce.observe(Critical), initial);
            assert_eq!(debounce.status(), initial);
        }
    }

    #[test]
    fn maintenance_counts_as_a_failure() {
        let mut debounce = Debounce::new(0, 1, 2, Passing);
        assert_eq!(feed(&mut debounce, &[Maintenance, Maintenance, Passing]), [Warning, Maintenance, Passing]);
    }

    #[test]
    fn counters_saturate_instead_of_overflowing() {
        let mut debounce = Debounce::new(0, 0, u32::MAX, Passing);
        debounce.failures = u32::MAX - 1;
        assert_eq!(debounce.observe(Critical), Critical);
        assert_eq!(debounce.observe(Critical), Critical);
        assert_eq!(debounce.failures, u32::MAX);
    }
}

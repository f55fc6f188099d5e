//! The token and key-set request counts that the configured intervals predict.

use crate::MARGIN_S;

/// Access-token requests by `read_at_s`: one at start, then one per refresh period, which
/// is the lifetime less min(refresh_before, lifetime / 2) (SPEC §6; src/jtl/access_token.rs).
pub(crate) fn predict_token_requests(
    read_at_s: f64,
    expires_in_s: u64,
    refresh_before_s: u64,
) -> u64 {
    let lifetime_ms = expires_in_s * 1000;
    let period_s = (lifetime_ms - (refresh_before_s * 1000).min(lifetime_ms / 2)) as f64 / 1000.0;
    let refreshes = (read_at_s / period_s).floor();
    let margin = (read_at_s - refreshes * period_s).min((refreshes + 1.0) * period_s - read_at_s);
    assert!(
        margin >= MARGIN_S,
        "read at {read_at_s} s is {margin} s from a token refresh: the count would not be exact"
    );
    1 + refreshes as u64
}

/// Key-set requests by `read_at_s`: one at start, a periodic refresh `interval_s` after
/// the latest fetch, and at each rotation one refetch for the unknown kid, at once when
/// `min_refetch_s` has passed since the latest fetch, else when it has (SPEC §6).
pub(crate) fn predict_key_set_requests(
    read_at_s: f64,
    interval_s: f64,
    min_refetch_s: f64,
    rotations_s: &[f64],
) -> u64 {
    let mut count = 1;
    let mut last = 0.0_f64;
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() >= MARGIN_S,
            "{what}: {a} s and {b} s are too close for an exact count"
        );
    };
    for &rotation in rotations_s {
        while last + interval_s < rotation {
            last += interval_s;
            count += 1;
            close(last, rotation, "a periodic key-set refresh and a rotation");
        }
        close(
            last + interval_s,
            rotation,
            "a periodic key-set refresh and a rotation",
        );
        close(
            last + min_refetch_s,
            rotation,
            "the refetch limit and a rotation",
        );
        last = rotation.max(last + min_refetch_s);
        count += 1;
    }
    while last + interval_s < read_at_s {
        last += interval_s;
        count += 1;
    }
    close(
        last + interval_s,
        read_at_s,
        "a periodic key-set refresh and the read",
    );
    count
}

//! `[shared_cache]` (SPEC §12): off by default, Redis URLs, checks, redaction, warnings.

use super::*;

#[test]
fn shared_cache_is_off_by_default_and_reads_redis_urls() {
    let config = load(VALID).unwrap().config;
    assert!(config.shared_cache.redis.is_none());
    assert_eq!(config.shared_cache.key_prefix, "jtl-auth-sidecar");

    let config = load(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"rediss://app:p%40ss@cache.internal:6380/3\"\nkey_prefix = \"shop-prod\"\n"
    ))
    .unwrap()
    .config;
    let target = config.shared_cache.redis.unwrap();
    assert!(target.tls);
    assert_eq!(target.host, "cache.internal");
    assert_eq!(target.port, 6380);
    assert_eq!(target.db, 3);
    assert_eq!(target.username.as_deref(), Some("app"));
    assert_eq!(
        target.password,
        Some(RedisPassword::Inline(Secret::new("p@ss"))),
        "percent-decoded"
    );
    assert!(!format!("{target:?}").contains("p@ss"));
    assert_eq!(config.shared_cache.key_prefix, "shop-prod");

    let target = load(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"redis://[::1]\"\nredis_password_file = \"/run/secrets/redis\"\n"
    ))
    .unwrap()
    .config
    .shared_cache
    .redis
    .unwrap();
    assert!(!target.tls);
    assert_eq!(
        (target.host.as_str(), target.port, target.db),
        ("::1", 6379, 0)
    );
    assert_eq!(target.address(), "[::1]:6379");
    assert_eq!(
        target.password,
        Some(RedisPassword::File("/run/secrets/redis".into()))
    );
}

#[test]
fn shared_cache_keys_are_checked() {
    for (toml, key, reason) in [
        (
            "[shared_cache]\nredis_url = \"http://cache:6379\"",
            "shared_cache.redis_url",
            "must start with redis:// or rediss://",
        ),
        (
            "[shared_cache]\nredis_url = \"memcached://u:hunter2@cache\"",
            "shared_cache.redis_url",
            "must start with redis:// or rediss://",
        ),
        (
            "[shared_cache]\nredis_url = \"redis://cache/db0\"",
            "shared_cache.redis_url",
            "database number",
        ),
        (
            "[shared_cache]\nredis_url = \"rediss://cache/0#insecure\"",
            "shared_cache.redis_url",
            "must not contain a query or fragment",
        ),
        (
            "[shared_cache]\nredis_url = \"redis://cache?db=1\"",
            "shared_cache.redis_url",
            "must not contain a query or fragment",
        ),
        (
            "[shared_cache]\nredis_url = \"redis://\"",
            "shared_cache.redis_url",
            "names no host",
        ),
        (
            "[shared_cache]\nkey_prefix = \"\"",
            "shared_cache.key_prefix",
            "must not be empty",
        ),
        (
            "[shared_cache]\nkey_prefix = \"my app\"",
            "shared_cache.key_prefix",
            "whitespace",
        ),
        (
            "[shared_cache]\nredis_url = \"redis://:pw@127.0.0.1\"\nredis_password_file = \"/run/secrets/redis\"",
            "shared_cache.redis_password_file",
            "not both",
        ),
        (
            "[shared_cache]\nredis_urls = \"redis://127.0.0.1\"",
            "shared_cache.redis_urls",
            "unknown key",
        ),
    ] {
        assert_problem(toml, key, reason);
    }
    // The environment sets them too.
    let loaded = load_with_env(
        VALID,
        &[(
            "JTL_SIDECAR_SHARED_CACHE__REDIS_URL",
            "redis://127.0.0.1:6390/2",
        )],
    )
    .unwrap();
    assert_eq!(loaded.config.shared_cache.redis.unwrap().port, 6390);
}

#[test]
fn redis_passwords_are_redacted_in_check_output_and_problems() {
    for (url, hidden) in [
        ("redis://:hunter2@cache.internal:6379/0", "hunter2"),
        ("rediss://app:hunter2@cache.internal/1", "hunter2"),
        ("rediss://app:p%40ss@cache.internal/1", "p%40ss"),
    ] {
        let loaded = load(&format!("{VALID}\n[shared_cache]\nredis_url = {url:?}\n")).unwrap();
        let shown = loaded.effective.to_redacted_toml();
        assert!(!shown.contains(hidden), "{url}: {shown}");
        assert!(
            shown.contains(":<redacted>@cache.internal"),
            "{url}: {shown}"
        );
    }
    let (code, stdout, stderr) = run_check(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"redis://:redis-pass-9@127.0.0.1:6379/0\"\n"
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("redis_url = \"redis://:<redacted>@127.0.0.1:6379/0\""),
        "{stdout}"
    );
    assert!(!stdout.contains("redis-pass-9") && !stderr.contains("redis-pass-9"));
    // Not in a problem line either, nor in a type error.
    let lines = problems(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"http://:redis-pass-9@cache/x\"\n"
    ));
    assert!(
        lines.iter().all(|l| !l.contains("redis-pass-9")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("shared_cache.redis_url: ")),
        "{lines:?}"
    );
    let lines = problems(&format!("{VALID}\n[shared_cache]\nredis_url = 8675309\n"));
    assert_eq!(
        lines,
        ["shared_cache.redis_url: expected a string, found a number"]
    );
}

#[test]
fn shared_cache_warnings() {
    let loaded = load(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"redis://cache.internal\"\n"
    ))
    .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("shared_cache.redis_url:") && w.contains("unencrypted")),
        "{:?}",
        loaded.warnings
    );
    let loaded = load(&format!(
        "{VALID}\n[shared_cache]\nredis_password_file = \"/nowhere\"\n"
    ))
    .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("shared_cache.redis_password_file:") && w.contains("ignored")),
        "{:?}",
        loaded.warnings
    );
    let loaded = load(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"rediss://cache.internal\"\nredis_password_file = \"/nowhere/redis-password\"\n"
    ))
    .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("shared_cache.redis_password_file:")
                && w.contains("cannot be read here")),
        "{:?}",
        loaded.warnings
    );
    assert!(!loaded.warnings.iter().any(|w| w.contains("unencrypted")));
}

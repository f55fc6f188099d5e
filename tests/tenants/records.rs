//! Tenants recorded on verified requests: once per tenant, counted, retried after a failure.

use super::*;

/// The sidecar's tenant-record counts from `/metrics`: inserted, known, failure, skipped,
/// in flight.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Records {
    inserted: u64,
    known: u64,
    failure: u64,
    skipped: u64,
    in_flight: u64,
}

impl Records {
    /// How often the store was asked.
    fn asked(&self) -> u64 {
        self.inserted + self.known + self.failure
    }
}

async fn records(proxy: &Proxy) -> Records {
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await;
    let text = body_text(&metrics);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let result = |result: &str| {
        value(&format!(
            "jtl_sidecar_tenant_records_total{{result=\"{result}\"}}"
        ))
    };
    Records {
        inserted: result("inserted"),
        known: result("known"),
        failure: result("failure"),
        skipped: result("skipped"),
        in_flight: value("jtl_sidecar_tenant_records_in_flight"),
    }
}

/// Waits until no record is in flight and `condition` holds for the counts; returns them.
/// Once a request has been answered, any record it started is counted in flight, so
/// "none in flight" means every earlier request's record is over.
async fn records_when(proxy: &Proxy, what: &str, condition: impl Fn(&Records) -> bool) -> Records {
    let deadline = tokio::time::Instant::now() + common::harness::scaled(Duration::from_secs(15));
    loop {
        let now = records(proxy).await;
        if now.in_flight == 0 && condition(&now) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A verified request to the backend (not connect-tenant) as `user` with `slug`.
async fn request_as(proxy: &Proxy, user: &str, slug: &str) -> Answer {
    let token = mint(proxy, user, slug);
    get(
        &proxy.url("/api/orders"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// The tenant as stored, once it is there.
async fn eventually_stored(db: &TestDb) -> StoredTenant {
    let deadline = tokio::time::Instant::now() + common::harness::scaled(Duration::from_secs(15));
    loop {
        if let (_, Some(tenant)) = stored(db).await {
            return tenant;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tenant was never stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

on_both_stores!(first_verified_request_of_an_unknown_tenant_stores_it_with_its_user_and_slug);
async fn first_verified_request_of_an_unknown_tenant_stores_it_with_its_user_and_slug(
    db: TestDb,
) -> TestDb {
    let proxy = sidecar(&db.url).await;
    let answer = request_as(&proxy, USER, "acme").await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    assert_eq!(proxy.backend_hits(), 1);
    let tenant = eventually_stored(&db).await;
    assert_eq!(tenant.tenant_id.to_string(), TENANT);
    assert_eq!(tenant.tenant_slug, "acme");
    assert_eq!(tenant.installed_by, USER);
    assert_eq!(tenant.installed_at, tenant.updated_at);
    let counted = records_when(&proxy, "the insert is counted", |r| r.inserted == 1).await;
    assert_eq!(counted.asked(), 1, "{counted:?}");
    db
}

on_both_stores!(later_requests_of_a_recorded_tenant_do_not_ask_the_store_again);
async fn later_requests_of_a_recorded_tenant_do_not_ask_the_store_again(db: TestDb) -> TestDb {
    let proxy = sidecar(&db.url).await;
    assert_eq!(request_as(&proxy, USER, "acme").await.status, 200);
    records_when(&proxy, "the first request's tenant is recorded", |r| {
        r.inserted == 1
    })
    .await;
    for n in 0..5 {
        let user = format!("00000000-0000-4000-8000-{n:012}");
        assert_eq!(request_as(&proxy, &user, "acme-renamed").await.status, 200);
    }
    let counted = records_when(&proxy, "nothing is in flight", |_| true).await;
    assert_eq!(
        counted,
        Records {
            inserted: 1,
            ..Records::default()
        }
    );
    let tenant = eventually_stored(&db).await;
    assert_eq!(tenant.installed_by, USER);
    assert_eq!(tenant.tenant_slug, "acme");
    db
}

on_both_stores!(concurrent_first_requests_of_one_tenant_ask_the_store_once);
async fn concurrent_first_requests_of_one_tenant_ask_the_store_once(db: TestDb) -> TestDb {
    let proxy = Arc::new(sidecar(&db.url).await);
    let requests = (0..20).map(|n| {
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let user = format!("00000000-0000-4000-8000-{n:012}");
            request_as(&proxy, &user, "acme").await
        })
    });
    for answer in futures_util::future::join_all(requests).await {
        assert_eq!(answer.unwrap().status, 200);
    }
    let counted = records_when(&proxy, "the tenant is recorded", |r| r.inserted == 1).await;
    assert_eq!(counted.asked(), 1, "single flight broken: {counted:?}");
    assert_eq!(stored(&db).await.0, 1);
    db
}

on_both_stores!(a_row_made_by_connect_tenant_is_not_changed_by_requests_nor_asked_about);
async fn a_row_made_by_connect_tenant_is_not_changed_by_requests_nor_asked_about(
    db: TestDb,
) -> TestDb {
    let proxy = sidecar(&db.url).await;
    let installer = "00000000-0000-4000-8000-00000000beef";
    let connect = post(
        &proxy,
        &token_body(&mint(&proxy, installer, "acme-gmbh")),
        &[],
    )
    .await;
    assert_eq!(connect.status, 200, "{}", body_text(&connect));
    let (_, connected) = stored(&db).await;
    let connected = connected.unwrap();

    assert_eq!(request_as(&proxy, USER, "something-else").await.status, 200);
    // Connect-tenant marked the tenant known: the request asked the store nothing.
    let counted = records_when(&proxy, "nothing is in flight", |_| true).await;
    assert_eq!(counted, Records::default());
    let (count, after) = stored(&db).await;
    assert_eq!(count, 1);
    assert_eq!(after.unwrap(), connected);
    db
}

on_both_stores!(a_tenant_the_store_holds_already_is_left_as_it_is_and_counted_known);
async fn a_tenant_the_store_holds_already_is_left_as_it_is_and_counted_known(db: TestDb) -> TestDb {
    // Connected through another replica (or before a restart): in the store, not in this
    // sidecar's memory.
    let store = db.store().await;
    let installer = "00000000-0000-4000-8000-00000000beef";
    store
        .upsert(Uuid::parse_str(TENANT).unwrap(), "acme-gmbh", installer)
        .await
        .unwrap();
    store.close().await;
    let (_, before) = stored(&db).await;
    let before = before.unwrap();

    let proxy = sidecar(&db.url).await;
    assert_eq!(request_as(&proxy, USER, "something-else").await.status, 200);
    let counted = records_when(&proxy, "the store is asked", |r| r.known == 1).await;
    assert_eq!(counted.asked(), 1, "{counted:?}");
    let (count, after) = stored(&db).await;
    assert_eq!(count, 1);
    assert_eq!(after.unwrap(), before, "a request changed an existing row");

    // Known now: the next request asks nothing.
    assert_eq!(request_as(&proxy, USER, "something-else").await.status, 200);
    let counted = records_when(&proxy, "nothing is in flight", |_| true).await;
    assert_eq!(counted.asked(), 1, "{counted:?}");
    db
}

on_both_stores!(a_failed_record_is_counted_and_tried_again_on_a_later_request);
async fn a_failed_record_is_counted_and_tried_again_on_a_later_request(db: TestDb) -> TestDb {
    let proxy = sidecar(&db.url).await;
    // The sidecar has migrated the store (SQLite at start-up, PostgreSQL on its first
    // check); then an operator moves the table away: inserts fail.
    wait_for_readiness(&proxy, 200).await;
    execute(&db, "ALTER TABLE jtl_tenants RENAME TO jtl_tenants_away").await;

    for failures in 1..=2 {
        let answer = request_as(&proxy, USER, "acme").await;
        assert_eq!(answer.status, 200, "{}", body_text(&answer));
        let counted =
            records_when(&proxy, "the failure is counted", |r| r.failure == failures).await;
        assert_eq!(counted.inserted, 0, "{counted:?}");
    }
    assert_eq!(proxy.backend_hits(), 2);

    // The table is back: the tenant's next request records it.
    execute(&db, "ALTER TABLE jtl_tenants_away RENAME TO jtl_tenants").await;
    let later_user = "00000000-0000-4000-8000-00000000cafe";
    assert_eq!(request_as(&proxy, later_user, "acme").await.status, 200);
    records_when(&proxy, "the tenant is recorded", |r| r.inserted == 1).await;
    let tenant = eventually_stored(&db).await;
    assert_eq!(tenant.installed_by, later_user);
    db
}

#[tokio::test]
async fn an_unreachable_store_never_fails_a_request_and_each_failure_is_counted() {
    // Nothing listens on port 1.
    let proxy = sidecar("postgres://postgres@127.0.0.1:1/test").await;
    for failures in 1..=2 {
        let answer = request_as(&proxy, USER, "acme").await;
        assert_eq!(answer.status, 200, "{}", body_text(&answer));
        // Not cached: the next request of the tenant asks the store again.
        let counted =
            records_when(&proxy, "the failure is counted", |r| r.failure == failures).await;
        assert_eq!(counted.asked(), failures, "{counted:?}");
    }
    assert_eq!(proxy.backend_hits(), 2);
}

#[tokio::test]
async fn postgres_down_then_up_a_tenant_seen_meanwhile_is_recorded_on_its_next_request() {
    let Some(db) = TestDb::postgres(
        "postgres_down_then_up_a_tenant_seen_meanwhile_is_recorded_on_its_next_request",
    )
    .await
    else {
        return;
    };
    let server = url::Url::parse(&db.url).unwrap();
    let target =
        tokio::net::lookup_host((server.host_str().unwrap(), server.port().unwrap_or(5432)))
            .await
            .unwrap()
            .next()
            .unwrap();
    let relay = Relay::reserve(target).await;
    let proxy = sidecar(&db.via(relay.addr)).await;

    let answer = request_as(&proxy, USER, "acme").await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    records_when(&proxy, "the failure is counted", |r| r.failure == 1).await;

    relay.start();
    wait_for_readiness(&proxy, 200).await;
    assert_eq!(request_as(&proxy, USER, "acme").await.status, 200);
    records_when(&proxy, "the tenant is recorded", |r| r.inserted == 1).await;
    let tenant = eventually_stored(&db).await;
    assert_eq!(tenant.installed_by, USER);
    relay.cut();
    drop(proxy);
    db.drop_schema().await;
}

on_both_stores!(with_record_on_request_off_requests_store_nothing);
async fn with_record_on_request_off_requests_store_nothing(db: TestDb) -> TestDb {
    let proxy = Proxy::builder()
        .toml("[tenants]\nrecord_on_request = false")
        .env(vec![(
            "JTL_SIDECAR_TENANTS__DATABASE_URL".to_owned(),
            db.url.clone(),
        )])
        .start()
        .await;
    for n in 0..3 {
        let user = format!("00000000-0000-4000-8000-{n:012}");
        assert_eq!(request_as(&proxy, &user, "acme").await.status, 200);
    }
    // A record is started in the request's own path, before its answer (its slot counted
    // in flight, or `skipped`): with the three answers here, all-zero metrics mean none was.
    assert_eq!(records(&proxy).await, Records::default());
    assert_eq!(stored(&db).await.0, 0);
    // Connect-tenant still stores the tenant.
    let connect = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(connect.status, 200, "{}", body_text(&connect));
    assert_eq!(stored(&db).await.0, 1);
    db
}

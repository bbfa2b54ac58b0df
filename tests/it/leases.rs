//! Leases with fencing tokens on a real PostgreSQL
//! (`ingest/control/src/lease.rs`): one holder at a time, takeover after
//! expiry with a higher token, and a write by the holder that lost the
//! lease refused inside its own transaction.

use std::time::Duration;

use crate::support::TestEnv;
use tollgate_control::lease::{Lease, LeaseError};

async fn pool(env: &TestEnv) -> sqlx::PgPool {
    sqlx::PgPool::connect(&env.pg_url).await.unwrap()
}

/// A write guarded by `fence`: the fence check and the write commit together.
async fn fenced_write(
    pool: &sqlx::PgPool,
    fence: &tollgate_control::lease::Fence,
    value: &str,
) -> Result<(), LeaseError> {
    let mut tx = pool.begin().await.unwrap();
    fence.check(&mut tx).await?;
    sqlx::query("INSERT INTO lease_test_writes (holder, token, value) VALUES ($1, $2, $3)")
        .bind(&fence.holder)
        .bind(fence.token)
        .bind(value)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    Ok(())
}

#[tokio::test]
async fn one_holder_at_a_time_and_a_stale_holder_is_fenced() {
    let env = TestEnv::new("leases").await;
    let pool = pool(&env).await;
    sqlx::query("CREATE TABLE lease_test_writes (holder TEXT, token BIGINT, value TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    let a = Lease::new("evaluator", "replica-a", Duration::from_millis(1500));
    let b = Lease::new("evaluator", "replica-b", Duration::from_millis(1500));

    let fence_a = a.acquire(&pool).await.unwrap();
    assert_eq!(fence_a.token, 1);
    match b.acquire(&pool).await {
        Err(LeaseError::Held { holder, .. }) => assert_eq!(holder, "replica-a"),
        other => panic!("b took a held lease: {other:?}"),
    }
    // Renewing keeps the token.
    assert_eq!(a.acquire(&pool).await.unwrap().token, 1);
    fenced_write(&pool, &fence_a, "a1").await.unwrap();

    // A stops renewing (paused); B takes over once the lease expires.
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    let fence_b = loop {
        match b.acquire(&pool).await {
            Ok(fence) => break fence,
            Err(LeaseError::Held { .. }) => {
                assert!(std::time::Instant::now() < deadline, "no takeover");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("{other}"),
        }
    };
    assert_eq!(fence_b.token, 2, "a new holder gets a higher token");
    fenced_write(&pool, &fence_b, "b1").await.unwrap();

    // A wakes up and writes with its old fence: refused, nothing written.
    match fenced_write(&pool, &fence_a, "a2").await {
        Err(LeaseError::Fenced { token, holder, .. }) => {
            assert_eq!((token, holder.as_str()), (1, "replica-a"))
        }
        other => panic!("a stale holder wrote: {other:?}"),
    }
    // And cannot take the lease back while B renews.
    assert!(matches!(
        a.acquire(&pool).await,
        Err(LeaseError::Held { .. })
    ));
    let writes: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT holder, token, value FROM lease_test_writes ORDER BY value")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        writes,
        vec![
            ("replica-a".to_string(), 1, "a1".to_string()),
            ("replica-b".to_string(), 2, "b1".to_string())
        ]
    );

    // Releasing hands over at once, with the next token.
    b.release(&pool, &fence_b).await.unwrap();
    assert!(fenced_write(&pool, &fence_b, "b2").await.is_err());
    assert_eq!(a.acquire(&pool).await.unwrap().token, 3);
}

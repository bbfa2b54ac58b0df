use super::*;

const MIGRATIONS: [&str; 3] = [
    include_str!("../../../../migrations/clickhouse/0031_error_patterns.sql"),
    include_str!("../../../../migrations/clickhouse/0036_latency_minute_buckets.sql"),
    include_str!("../../../../migrations/clickhouse/0040_latency_errors_leave_out_cancelled.sql"),
];

/// The migrations' text with runs of white space made one space.
fn migrations() -> String {
    MIGRATIONS
        .iter()
        .flat_map(|m| m.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ")
}

fn one_space(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn scope() -> Scope {
    Scope {
        teams: Some(vec!["ads".into(), "it's".into()]),
        from: 1_773_100_800,
        to: 1_773_100_920,
        offsets: Some(vec![(0, 3, 9), (2, 40, 41)]),
    }
}

#[test]
fn a_batch_spans_its_teams_minutes_and_offsets() {
    // 2026-03-10 00:00:59, 00:01:00 and 00:03:30 UTC.
    let rows = [
        ("search", 1_773_100_859, 1, 7),
        ("ads", 1_773_100_860, 0, 12),
        ("search", 1_773_101_010, 1, 4),
        ("ads", 1_773_100_900, 0, 13),
    ];
    assert_eq!(
        Scope::of(rows),
        Some(Scope {
            teams: Some(vec!["ads".into(), "search".into()]),
            from: 1_773_100_800,
            to: 1_773_101_040,
            offsets: Some(vec![(0, 12, 13), (1, 4, 7)]),
        })
    );
    assert_eq!(Scope::of([]), None);
}

#[test]
fn every_declared_expression_is_its_views_own() {
    let text = migrations();
    for table in tables() {
        let expressions: Vec<String> = match &table {
            ViewTable::Summed(t) => t
                .feeds
                .iter()
                .flat_map(|f| {
                    f.dimensions
                        .iter()
                        .chain(&f.sums)
                        .cloned()
                        .chain([f.filter.clone()])
                })
                .collect(),
            ViewTable::Refolded(t) => {
                let mut all: Vec<String> = t.select.split(", ").map(one_space).collect();
                all.push(t.filter.clone());
                all.push(format!("GROUP BY {}", t.group_by));
                all
            }
        };
        for expression in expressions {
            let expression = one_space(&expression);
            assert!(
                text.contains(&expression),
                "{}: `{expression}` is not in the view's migration",
                table.table()
            );
        }
    }
}

#[test]
fn every_feed_selects_each_column_of_its_table() {
    for table in tables() {
        if let ViewTable::Summed(t) = table {
            for feed in &t.feeds {
                assert_eq!(feed.dimensions.len(), t.dimensions.len(), "{}", t.table);
                assert_eq!(feed.sums.len(), t.sums.len(), "{}", t.table);
            }
        }
    }
}

#[test]
fn a_difference_unites_every_feed_with_the_table_negated() {
    let tables = tables();
    let Some(ViewTable::Summed(buckets)) = tables
        .iter()
        .find(|t| t.table() == "latency_minute_buckets")
    else {
        panic!("no bucket table");
    };
    let sql = difference_sql(buckets, &scope());
    assert_eq!(sql.matches(" UNION ALL ").count(), 2, "{sql}");
    assert_eq!(sql.matches("has(?, team_id)").count(), 3, "{sql}");
    assert!(sql.contains("-toInt64(sum(total_us)) AS d1 FROM latency_minute_buckets"));
    assert!(sql.contains("HAVING s0 != 0 OR s1 != 0"), "{sql}");
    let repair = repair_sql(buckets, &scope());
    assert!(
        repair.starts_with(
            "INSERT INTO latency_minute_buckets (minute, org_id, team_id, provider, model, metric, bucket, calls, total_us) \
             SELECT toDateTime(k0), k1, k2, k3, k4, k5, k6, s0, s1 FROM"
        ),
        "{repair}"
    );
    assert!(repair.ends_with("WHERE s0 >= 0 AND s1 >= 0"), "{repair}");
}

#[test]
fn money_is_compared_as_decimals() {
    let tables = tables();
    let Some(ViewTable::Summed(recovery)) =
        tables.iter().find(|t| t.table() == "error_recovery_minute")
    else {
        panic!("no recovery table");
    };
    let sql = difference_sql(recovery, &scope());
    assert!(sql.contains("sum(cost) AS d4"), "{sql}");
    assert!(sql.contains("-sum(cost) AS d4"), "{sql}");
    assert!(!sql.contains("toInt64(sum(cost))"), "{sql}");
}

#[test]
fn a_counted_refold_reads_only_the_batch_in_cells_short_by_it() {
    let tables = tables();
    let Some(latency) = tables.iter().find(|t| t.table() == "latency_minute_calls") else {
        panic!("no latency calls table");
    };
    let sql = latency.repair_sql(&scope());
    let own = "((kafka_partition = 0 AND kafka_offset >= 3 AND kafka_offset <= 9) \
               OR (kafka_partition = 2 AND kafka_offset >= 40 AND kafka_offset <= 41))";
    // The batch's rows are read, and counted per cell.
    assert_eq!(sql.matches(own).count(), 2, "{sql}");
    assert!(sql.contains("WHERE s0 = own)"), "{sql}");
    assert!(sql.contains("-toInt64(countMerge(calls)) AS d0"), "{sql}");
    assert_eq!(sql.matches('?').count(), 2, "{sql}");
    // The catalog's refold: every cell of the batch, no teams bound.
    let Some(catalog) = tables.iter().find(|t| t.table() == "error_pattern_catalog") else {
        panic!("no pattern catalog");
    };
    let sql = catalog.repair_sql(&scope());
    assert!(sql.contains(own), "{sql}");
    assert!(!sql.contains('?'), "{sql}");
    // Checked by its keys over the batch's teams' calls.
    let Some(check) = check_sql(catalog, &scope()) else {
        panic!("the catalog is not checked");
    };
    assert!(check.contains("has(?, team_id)"), "{check}");
}

#[test]
fn the_catalog_binds_every_value() {
    let statements = catalog(&tables());
    // A check and a repair per table.
    assert_eq!(statements.len(), 10, "{statements:?}");
    for (name, sql) in statements {
        assert!(!sql.contains('?'), "{name}: {sql}");
        assert!(
            sql.contains("'ads'") || name.ends_with("error_pattern_catalog"),
            "{name}: {sql}"
        );
    }
}

#[test]
fn a_range_reads_every_team_and_every_row_of_its_minutes() {
    let range = Scope::range(1_773_100_800, 1_773_187_200);
    for table in tables() {
        let sql = table.repair_sql(&range);
        assert!(!sql.contains('?'), "{sql}");
        assert!(!sql.contains("kafka_offset"), "{sql}");
        assert!(
            sql.contains(
                "occurred_at >= toDateTime(1773100800) AND occurred_at < toDateTime(1773187200)"
            ),
            "{sql}"
        );
        let Some(check) = check_sql(&table, &range) else {
            panic!("{} is not checked", table.table());
        };
        assert!(!check.contains('?'), "{check}");
        // A covered table has no minute: its keys over all time.
        let its_rows = if table.idempotent() {
            "occurred_at >= toDateTime(1773100800)"
        } else {
            "minute >= toDateTime(1773100800)"
        };
        assert!(check.contains(its_rows), "{check}");
    }
}

#[test]
fn a_covered_table_lacks_a_key_or_a_bound_of_the_facts() {
    let Some(catalog) = tables()
        .into_iter()
        .find(|t| t.table() == "error_pattern_catalog")
    else {
        panic!("no pattern catalog");
    };
    assert!(catalog.idempotent());
    assert_eq!(catalog.measure(), "keys");
    let Some(check) = check_sql(&catalog, &scope()) else {
        panic!("the catalog is not checked");
    };
    let sql = one_space(&check);
    for part in [
        "SELECT count() AS cells, toInt64(0) AS calls FROM (SELECT error_signature AS signature, \
         CAST(provider AS String) AS provider, http_status, error_type, error_template AS template, \
         min(occurred_at) AS f0, max(occurred_at) AS f1 FROM calls \
         WHERE (kind = 'ai.call.failed' AND error_signature != 0) AND occurred_at >= toDateTime(1773100800)",
        "AND has(?, team_id) GROUP BY signature, provider, http_status, error_type, template) \
         AS facts ANY LEFT JOIN (SELECT signature, provider, http_status, error_type, template, \
         minMerge(first_seen) AS t0, maxMerge(last_seen) AS t1, 1 AS present \
         FROM error_pattern_catalog GROUP BY signature, provider, http_status, error_type, template) \
         AS stored USING (signature, provider, http_status, error_type, template) \
         WHERE present = 0 OR NOT (t0 <= f0) OR NOT (t1 >= f1)",
    ] {
        assert!(sql.contains(part), "{sql}\nlacks\n{part}");
    }
    // One `?`, the teams of the facts: the catalog has none.
    assert_eq!(sql.matches('?').count(), 1, "{sql}");
}

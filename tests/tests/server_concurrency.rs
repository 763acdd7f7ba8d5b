//! Many clients at once: 32 clients, each on its own connection and login,
//! run a mix of queries for a bounded time; every answer must equal the one
//! a single client gets, with no error, under a small memory pool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod server_common;

use std::time::{Duration, Instant};

use server_common::{Fixture, channel, login, pretty, query};

const CLIENTS: usize = 32;
const RUN_FOR: Duration = Duration::from_secs(8);

const QUERIES: &[&str] = &[
    "SELECT ben_res_dpt, ben_sex_cod, count(*) AS persons FROM ir_ben_r GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT prs_nat_ref, count(*), sum(prs_pai_mnt) FROM er_prs_f GROUP BY 1 ORDER BY 1",
    "SELECT b.ben_sex_cod, count(*) FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa GROUP BY 1 ORDER BY 1",
    "SELECT substr(dgn_pal, 1, 1) AS chapter, count(*) FROM t_mco_b GROUP BY 1 ORDER BY 1",
];

#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_clients_get_correct_answers_without_errors() {
    let mut fixture = Fixture::new();
    fixture.config.limits.max_concurrent_queries_per_user = CLIENTS;
    fixture.config.limits.memory_limit_mb = 1024;
    let server = fixture.start().await;

    // The reference answers, from one client alone.
    let mut single = login(channel(&server).await, "alice").await;
    let mut expected = Vec::new();
    for sql in QUERIES {
        expected.push(pretty(
            &query(&mut single, sql).await.expect("reference answer"),
        ));
    }

    let deadline = Instant::now() + RUN_FOR;
    let mut clients = Vec::new();
    for id in 0..CLIENTS {
        let channel = channel(&server).await;
        let expected = expected.clone();
        clients.push(tokio::spawn(async move {
            let mut client = login(channel, "alice").await;
            let mut answered = 0usize;
            let mut next = id;
            while Instant::now() < deadline {
                let which = next % QUERIES.len();
                next += 1;
                let batches = query(&mut client, QUERIES[which])
                    .await
                    .unwrap_or_else(|e| panic!("client {id}, query {which}: {e}"));
                assert_eq!(
                    pretty(&batches),
                    expected[which],
                    "client {id}, query {which}"
                );
                answered += 1;
            }
            answered
        }));
    }
    let mut total = 0;
    for client in clients {
        let answered = client.await.expect("a client task");
        assert!(answered > 0, "a client got no answer in time");
        total += answered;
    }
    eprintln!("{CLIENTS} clients answered {total} queries in {RUN_FOR:?}");
    server.shutdown().await.unwrap();
}

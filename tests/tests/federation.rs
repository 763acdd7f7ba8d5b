//! A coordinator over a data node, in one process: the coordinator's engine
//! reads the node's tables through its catalog (`federation::NodeCatalog`),
//! sends each cells plan as bytes, and the node's engine decodes, checks
//! and runs it. The released cells and reports must be the ones an engine
//! over the whole data folder gives; plans that would let out rows or
//! identifiers must be refused by the node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::catalog::default_table_source::provider_as_source;
use datafusion::functions_aggregate::expr_fn::{count, min};
use datafusion::logical_expr::{LogicalPlanBuilder, col};
use futures::TryStreamExt;
use seuil_engine::federation::{self, CellsRunner, NodeCatalog, NodeCells};
use seuil_engine::lineage::PERSONS_COLUMN;
use seuil_engine::{DataCatalog, Engine, EngineError, EngineOptions, NodeTraffic, User};
use seuil_policies::PolicySource;
use seuil_tests::{open_engine, test_data};

/// The tables of the health insurance's node, and the public code lists.
/// The hospital agency's tables, and the public code lists.
const HOSPITAL_TABLES: [&str; 5] = ["t_mco_b", "t_mco_c", "ref_cim10", "ref_atc", "ref_dpt"];

const CNAM_TABLES: [&str; 7] = [
    "ir_ben_r",
    "er_prs_f",
    "er_pha_f",
    "ir_imb_r",
    "ref_cim10",
    "ref_atc",
    "ref_dpt",
];

/// Runs cells plans on a node engine of this process, through the bytes a
/// network would carry.
#[derive(Debug)]
struct InProcessNode {
    name: String,
    engine: Engine,
    plans_run: Arc<AtomicUsize>,
}

#[async_trait]
impl CellsRunner for InProcessNode {
    async fn run(
        &self,
        node: &str,
        _query_id: &str,
        plan: Vec<u8>,
        _max_cells: usize,
    ) -> Result<NodeCells, EngineError> {
        assert_eq!(node, self.name, "a plan was sent to the wrong node");
        self.plans_run.fetch_add(1, Ordering::SeqCst);
        let run = self.engine.run_cells_plan(&plan).await?;
        let batches: Vec<RecordBatch> = run
            .stream
            .try_collect()
            .await
            .map_err(|e| EngineError::Execution(e.to_string()))?;
        Ok(NodeCells {
            traffic: NodeTraffic {
                node: node.to_string(),
                plans: 1,
                rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
                bytes: 0,
                bytes_scanned: 0,
            },
            batches,
        })
    }
}

fn copy_tables(from: &Path, to: &Path, tables: &[&str]) {
    std::fs::create_dir_all(to).expect("node folder");
    for table in tables {
        let file = format!("{table}.parquet");
        std::fs::copy(from.join(&file), to.join(&file)).expect("copying a table");
    }
}

/// A coordinator over one node (`name`, an engine of this process) and,
/// with `local`, that catalog's tables.
async fn coordinator(
    local: Option<DataCatalog>,
    name: &str,
    node: &Engine,
    plans_run: &Arc<AtomicUsize>,
) -> Result<Engine, EngineError> {
    coordinator_on(
        seuil_policies::SNDS_POLICY,
        EngineOptions::default(),
        local,
        name,
        node,
        plans_run,
    )
    .await
}

/// [`coordinator`] on the policy `policy`, opened with `options`.
async fn coordinator_on(
    policy: &str,
    options: EngineOptions,
    local: Option<DataCatalog>,
    name: &str,
    node: &Engine,
    plans_run: &Arc<AtomicUsize>,
) -> Result<Engine, EngineError> {
    let catalog = node.node_catalog().await.expect("node catalog");
    // What a node answers crosses the network as JSON.
    let catalog: NodeCatalog =
        serde_json::from_slice(&serde_json::to_vec(&catalog).expect("json")).expect("json");
    let nodes = [(name.to_string(), catalog)];
    let schema = federation::nodes::coordinator_data_schema(local.as_ref(), &nodes)?;
    let source = PolicySource::new("policies/snds.toml", policy.to_string());
    let (policy, _) = seuil_policies::load(&source, Some(&schema)).expect("policy over the nodes");
    let local = match local {
        Some(local) => Some(seuil_engine::person_index::attach(&policy, local, &options).await),
        None => None,
    };
    let data = federation::nodes::coordinator_catalog(local.as_ref(), &nodes, &policy)?;
    Ok(
        Engine::new(policy, data, options)?.with_cells_runner(Arc::new(InProcessNode {
            name: name.into(),
            engine: node.clone(),
            plans_run: Arc::clone(plans_run),
        })),
    )
}

async fn answer(engine: &Engine, user: &User, sql: &str) -> Result<String, String> {
    match engine.query(user, sql).await {
        Ok(result) => {
            // What moved between nodes is the coordinator's own.
            let mut report = result.report.clone();
            report.nodes.clear();
            let report = format!("{report:?}");
            let batches: Vec<RecordBatch> = result
                .stream
                .try_collect()
                .await
                .map_err(|e| e.to_string())?;
            let table = pretty_format_batches(&batches).map_err(|e| e.to_string())?;
            let mut lines: Vec<String> = table.to_string().lines().map(str::to_string).collect();
            lines.sort();
            Ok(format!("{}\n{report}", lines.join("\n")))
        }
        Err(error) => Err(error.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_releases_what_one_engine_over_all_the_data_releases() {
    let data = test_data(3_000, 11);
    let node_dir = tempfile::tempdir().expect("node folder");
    copy_tables(data.path(), node_dir.path(), &CNAM_TABLES);
    let whole = open_engine(data.path()).await;
    let node = node_engine(node_dir.path()).await;
    let plans_run = Arc::new(AtomicUsize::new(0));
    let coordinator = coordinator(None, "cnam", &node, &plans_run)
        .await
        .expect("coordinator");
    let alice = User::new("alice", "researcher");
    let queries = [
        "SELECT ben_res_dpt, count(*) FROM ir_ben_r GROUP BY 1",
        "SELECT ben_sex_cod, count(DISTINCT ben_nir_ano) AS persons FROM ir_ben_r GROUP BY 1",
        "SELECT b.ben_res_dpt, sum(p.prs_pai_mnt) AS paid FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa GROUP BY 1",
        "SELECT prs_nat_ref, date_part('year', exe_soi_dtd) AS year, sum(prs_pai_mnt), avg(bse_rem_mnt) FROM er_prs_f GROUP BY 1, 2",
        "SELECT pha_atc_cla, sum(pha_act_qsn) FROM er_pha_f GROUP BY 1",
        "SELECT r.libelle, count(*) FROM ir_imb_r i JOIN ref_cim10 r ON substr(i.med_mtf_cod, 1, 3) = r.code GROUP BY 1",
        "SELECT ben_sex_cod, ben_res_dpt, count(*) FROM ir_ben_r GROUP BY CUBE(ben_sex_cod, ben_res_dpt)",
        "SELECT b.ben_sex_cod, median(p.prs_pai_mnt), max(p.prs_pai_mnt) FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa WHERE b.ben_sex_cod = 1 GROUP BY ROLLUP(b.ben_sex_cod)",
        "SELECT count(*) FROM (SELECT ben_nir_psa FROM er_prs_f GROUP BY 1 HAVING count(*) > 20) t",
    ];
    for sql in queries {
        let expected = answer(&whole, &alice, sql).await;
        assert!(expected.is_ok(), "{sql}: {expected:?}");
        let federated = answer(&coordinator, &alice, sql).await;
        assert_eq!(federated, expected, "{sql}");
    }
    // Every released aggregate's cells came from the node.
    assert!(plans_run.load(Ordering::SeqCst) >= queries.len());
    // A refusal is the same refusal, and reaches no node.
    let before = plans_run.load(Ordering::SeqCst);
    let sql = "SELECT ben_nir_psa FROM ir_ben_r";
    assert_eq!(
        answer(&coordinator, &alice, sql).await,
        answer(&whole, &alice, sql).await
    );
    assert_eq!(plans_run.load(Ordering::SeqCst), before);
    // Tables of another node are not there to be named.
    assert!(
        answer(&coordinator, &alice, "SELECT count(*) FROM t_mco_b")
            .await
            .is_err()
    );
}

/// A data node's engine over `dir`, as `seuil node --data DIR` opens it.
async fn node_engine(dir: &Path) -> Engine {
    let source = PolicySource::new("policies/snds.toml", seuil_policies::SNDS_POLICY);
    let (engine, _) = Engine::open_share(&source, dir, EngineOptions::default())
        .await
        .expect("node engine");
    engine
}

/// Opens `dir` as a share of the tables, as `seuil serve --data DIR
/// --node ...` does.
async fn local_share(dir: &Path) -> DataCatalog {
    DataCatalog::open(dir, &EngineOptions::default())
        .await
        .expect("local tables")
        .as_share()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_with_local_tables_runs_their_cells_itself() {
    let data = test_data(2_000, 5);
    let local_dir = tempfile::tempdir().expect("local folder");
    copy_tables(data.path(), local_dir.path(), &CNAM_TABLES);
    let node_dir = tempfile::tempdir().expect("node folder");
    copy_tables(data.path(), node_dir.path(), &HOSPITAL_TABLES);
    let whole = open_engine(data.path()).await;
    let hospitals = node_engine(node_dir.path()).await;
    let plans_run = Arc::new(AtomicUsize::new(0));
    let local = local_share(local_dir.path()).await;
    let coordinator = coordinator(Some(local), "hospitals", &hospitals, &plans_run)
        .await
        .expect("coordinator");
    assert!(
        coordinator.data().person_index().is_some(),
        "the local tables are indexed by person"
    );
    let alice = User::new("alice", "researcher");
    for sql in [
        "SELECT ben_res_dpt, count(*) FROM ir_ben_r GROUP BY 1",
        "SELECT prs_nat_ref, sum(prs_pai_mnt) FROM er_prs_f GROUP BY 1",
        "SELECT r.libelle, count(*) FROM ir_imb_r i JOIN ref_cim10 r ON substr(i.med_mtf_cod, 1, 3) = r.code GROUP BY 1",
    ] {
        let expected = answer(&whole, &alice, sql).await;
        assert!(expected.is_ok(), "{sql}: {expected:?}");
        assert_eq!(answer(&coordinator, &alice, sql).await, expected, "{sql}");
    }
    assert_eq!(
        plans_run.load(Ordering::SeqCst),
        0,
        "local tables' cells are computed here"
    );
    // Stays reach their persons through the local beneficiaries: persons
    // of two places, refused for now, naming both.
    let error = answer(
        &coordinator,
        &alice,
        "SELECT substr(dgn_pal, 1, 1), count(*) FROM t_mco_b GROUP BY 1",
    )
    .await
    .expect_err("a query over two places' persons");
    assert!(
        error.contains("hospitals") && error.contains("this coordinator"),
        "{error}"
    );
    assert_eq!(plans_run.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_table_held_twice_is_refused_and_code_lists_are_not() {
    let data = test_data(500, 7);
    let node_dir = tempfile::tempdir().expect("node folder");
    copy_tables(data.path(), node_dir.path(), &CNAM_TABLES);
    let cnam = node_engine(node_dir.path()).await;
    let plans_run = Arc::new(AtomicUsize::new(0));
    // Code lists here and on the node: either copy serves.
    let lists_dir = tempfile::tempdir().expect("local folder");
    copy_tables(data.path(), lists_dir.path(), &["ref_cim10", "ref_atc"]);
    let local = local_share(lists_dir.path()).await;
    coordinator(Some(local), "cnam", &cnam, &plans_run)
        .await
        .expect("code lists may be held twice");
    // Claims here and on the node: a table split by rows, not served yet.
    let claims_dir = tempfile::tempdir().expect("local folder");
    copy_tables(data.path(), claims_dir.path(), &["er_prs_f", "ref_atc"]);
    let local = local_share(claims_dir.path()).await;
    match coordinator(Some(local), "cnam", &cnam, &plans_run).await {
        Err(EngineError::Setup(message)) => assert!(
            message.contains("er_prs_f")
                && message.contains("this coordinator")
                && message.contains("data node cnam"),
            "{message}"
        ),
        other => panic!("a private table held twice was served: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_plans_that_would_let_out_rows_or_identifiers() {
    let data = test_data(500, 3);
    let node = open_engine(data.path()).await;
    let tables = node.data();
    let scan = |table: &str| {
        LogicalPlanBuilder::scan(
            table,
            provider_as_source(Arc::clone(tables.table(table).expect("table"))),
            None,
        )
        .expect("scan")
    };
    let keyed_scan = |table: &str| {
        let index = tables.person_index().expect("person index");
        LogicalPlanBuilder::scan(
            table,
            provider_as_source(Arc::clone(index.table(table).expect("keyed table"))),
            None,
        )
        .expect("scan")
    };
    let persons = || count(col("ben_nir_ano")).alias(PERSONS_COLUMN);
    let plans = [
        // The rows of er_prs_f.
        scan("er_prs_f").build().expect("plan"),
        // Identifiers as cells.
        scan("ir_ben_r")
            .aggregate(vec![col("ben_nir_psa")], vec![persons()])
            .expect("aggregate")
            .build()
            .expect("plan"),
        // An identifier through an expression.
        scan("ir_ben_r")
            .aggregate(
                vec![datafusion::functions::expr_fn::substr(
                    col("ben_nir_ano"),
                    datafusion::prelude::lit(1),
                )],
                vec![persons()],
            )
            .expect("aggregate")
            .build()
            .expect("plan"),
        // An identifier value as an aggregate's result.
        scan("ir_ben_r")
            .aggregate(
                vec![col("ben_res_dpt")],
                vec![persons(), min(col("ben_nir_psa"))],
            )
            .expect("aggregate")
            .build()
            .expect("plan"),
        // Person numbers of the keyed copy.
        keyed_scan("er_prs_f")
            .aggregate(
                vec![col(seuil_engine::lineage::PERSON_NUMBER)],
                vec![count(col("prs_nat_ref")).alias(PERSONS_COLUMN)],
            )
            .expect("aggregate")
            .build()
            .expect("plan"),
        // An identifier value through a scalar subquery, whose plan is not
        // an input of the projection.
        scan("ir_ben_r")
            .aggregate(vec![col("ben_res_dpt")], vec![persons()])
            .expect("aggregate")
            .project(vec![
                col("ben_res_dpt"),
                col(PERSONS_COLUMN),
                datafusion::logical_expr::expr_fn::scalar_subquery(Arc::new(
                    scan("ir_ben_r")
                        .aggregate(
                            Vec::<datafusion::prelude::Expr>::new(),
                            vec![min(col("ben_nir_psa"))],
                        )
                        .expect("aggregate")
                        .build()
                        .expect("plan"),
                ))
                .alias("leak"),
            ])
            .expect("projection")
            .build()
            .expect("plan"),
        // An identifier value through a window function, then grouped.
        scan("ir_ben_r")
            .window(vec![
                datafusion::prelude::Expr::from(
                    datafusion::logical_expr::expr::WindowFunction::new(
                        datafusion::functions_aggregate::min_max::min_udaf(),
                        vec![col("ben_nir_psa")],
                    ),
                )
                .alias("first_id"),
            ])
            .expect("window")
            .aggregate(vec![col("first_id")], vec![persons()])
            .expect("aggregate")
            .build()
            .expect("plan"),
        // Grouped, but not cells: no persons column.
        scan("ir_ben_r")
            .aggregate(vec![col("ben_res_dpt")], vec![count(col("ben_sex_cod"))])
            .expect("aggregate")
            .build()
            .expect("plan"),
    ];
    for plan in plans {
        let shown = plan.display_indent().to_string();
        let bytes = federation::encode_cells_plan(&plan, tables).expect("encoding");
        match node.run_cells_plan(&bytes).await {
            Err(EngineError::Refused(_)) => {}
            Err(other) => panic!("{shown}\nfailed, but not as a refusal: {other}"),
            Ok(_) => panic!("{shown}\nwas run by the node"),
        }
    }
    // Bytes that are no plan, and a plan of a table the node does not hold.
    assert!(matches!(
        node.run_cells_plan(b"not a plan").await,
        Err(EngineError::InvalidQuery(_))
    ));
}

/// The released rows of a query, sorted, as text.
async fn released_rows(engine: &Engine, user: &User, sql: &str) -> String {
    let result = engine
        .query(user, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batches: Vec<RecordBatch> = result.stream.try_collect().await.unwrap();
    let table = pretty_format_batches(&batches).unwrap().to_string();
    let mut lines: Vec<&str> = table.lines().collect();
    lines.sort_unstable();
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_bounds_dp_contributions_as_one_engine_over_all_the_data_does() {
    let data = test_data(3_000, 11);
    let node_dir = tempfile::tempdir().expect("node folder");
    copy_tables(data.path(), node_dir.path(), &CNAM_TABLES);
    // An ε so large that the noise is nothing, and one contribution key
    // for all: the released cells are the bounded ones, which must not
    // depend on where the cells plan ran.
    let policy = seuil_tests::unlimited_dp_policy()
        .replace("epsilon_budget = 1e9", "epsilon_budget = 1e15")
        .replace(
            "project_epsilon_budget = 1e10",
            "project_epsilon_budget = 1e16",
        )
        .replace("epsilon_per_query = 1.0", "epsilon_per_query = 1e12");
    let options = EngineOptions {
        contribution_key: seuil_engine::options::ContributionKey::new([7; 32]),
        ..EngineOptions::default()
    };
    let ledger = || Arc::new(seuil_engine::budget::BudgetLedger::in_memory().unwrap());
    let source = PolicySource::new("dp.toml", policy.clone());
    let (whole, _) = Engine::open_files(&source, data.path(), options.clone())
        .await
        .unwrap();
    let whole = whole.with_budget(ledger());
    let (node, _) = Engine::open_share(&source, node_dir.path(), options.clone())
        .await
        .unwrap();
    let plans_run = Arc::new(AtomicUsize::new(0));
    let coordinator = coordinator_on(&policy, options, None, "cnam", &node, &plans_run)
        .await
        .expect("coordinator")
        .with_budget(ledger());
    let bob = User::new("bob", "public");
    let queries = [
        "SELECT ben_sex_cod, count(*), count(DISTINCT ben_nir_psa) FROM ir_ben_r GROUP BY 1",
        "SELECT date_trunc('month', exe_soi_dtd) AS month, count(*) FROM er_prs_f GROUP BY 1",
        "SELECT prs_nat_ref, sum(prs_pai_mnt), avg(prs_pai_mnt) FROM er_prs_f GROUP BY 1",
    ];
    for sql in queries {
        assert_eq!(
            released_rows(&coordinator, &bob, sql).await,
            released_rows(&whole, &bob, sql).await,
            "{sql}"
        );
    }
    assert!(plans_run.load(Ordering::SeqCst) >= queries.len());
}

//! # seuil-engine: SQL in, only safe aggregated cells out
//!
//! The engine answers ordinary SQL over private health data and releases
//! only aggregated cells that meet the policy's disclosure rules. It is built
//! on DataFusion: a query is parsed and planned by DataFusion against the
//! user's role-scoped catalog, then the **privacy rewrite**
//! ([`rewrite::PrivacyRewrite`]) rebuilds its `LogicalPlan` node by node,
//! enforcing each rule of the privacy contract (DESIGN.md §2) in its own
//! module under [`rules`]:
//!
//! - scans of private tables carry a hidden person column, reached through the
//!   policy's foreign-key path ([`rules::person_lineage`], [`rules::scopes`]),
//!   a path the engine joins once when it opens and keeps as a person index
//!   ([`person_index`]);
//! - the released aggregate counts distinct persons per cell, and cells under
//!   `min_persons` are suppressed before `HAVING`, `ORDER BY` and `LIMIT`
//!   ([`rules::min_persons`], [`release`]);
//! - sums of sensitive columns are clamped per person and protected by the
//!   dominance rules, order statistics leave out the extreme persons
//!   ([`rules::magnitudes`]), tables with margins get secondary suppression
//!   checked by an attacker's linear program ([`rules::margins`]), and
//!   released counts and sums may be rounded after suppression;
//! - row-level results, identifiers, person-mixing joins and windows,
//!   data-dependent errors and writes are refused or neutralised
//!   ([`rules::aggregates_only`], [`rules::identifiers`],
//!   [`rules::side_channels`], [`rules::read_only`]).
//!
//! The rewritten plan is a plain DataFusion plan of standard operators and
//! seuil's registered functions, so it runs in-process here and can run on
//! data nodes or Ballista. Execution is in two phases: the cells of each
//! released aggregate are computed and released by the role's release
//! mechanism ([`release`]); then the rest of the query runs over released
//! cells only and streams its result. Nothing in the second phase can read
//! private rows. An engine with an audit sink ([`audit`]) writes a line
//! before each query starts and one before its result leaves.
//!
//! A role in dp mode gets cells computed from contributions bounded per
//! person ([`cells`]) and released with noise by [`release::Dp`]. The
//! query's privacy cost is fixed from the policy and the query's shape
//! before any data is read, and charged first to the engine's budget
//! ledger ([`budget`], [`Engine::with_budget`]); an engine without a ledger
//! serves no dp role.
//!
//! The engine knows no network protocol: the Flight SQL server and the CLI
//! (`flight-server`) turn requests into [`Engine::query`] calls.
//!
//! ## Where a change belongs
//!
//! Modules import one way, lowest first (`tests/layout.rs` checks it):
//! [`error`], [`cancellation`], [`lineage`] (person lineage, reserved
//! names), [`functions`], [`limits`], [`options`],
//! [`grouping_set_properties`], [`session`], [`catalog`], then [`rules`],
//! [`cells`], [`release`], [`audit`], [`rewrite`], [`person_index`],
//! [`federation`], and the [`Engine`] here on top.
//!
//! - **A new privacy rule, or a change to one**: its own module under
//!   [`rules`], named after the rule, with the contract's text in its doc
//!   comment and its cases in `tests/slt/<rule>.slt`. A rule reads lineage
//!   and the policy and returns a verdict, a refusal or an expression; it
//!   never imports the walker. The walker ([`rewrite`]) calls it where it
//!   applies and notes what it did ([`rewrite::Note`]).
//! - **A new release mechanism** (a mode of the policy): an implementation
//!   of [`release::ReleaseMechanism`] beside [`release::Threshold`], chosen
//!   in [`release::mechanism_for`]. It says what the cells plan must compute
//!   ([`cells::CellsNeeds`]) and releases computed cells; the threshold code
//!   is not edited.
//! - **A new value in the cells plan** (a column a mechanism needs): a
//!   [`cells::Measure`] or a level of the per-person plan in [`cells`], and
//!   its place in [`cells::CellsLayout`].
//! - **A new aggregate function**: a module of [`functions`], registered in
//!   every session by [`functions::register`]; DataFusion's own aggregates
//!   are told apart by [`functions::KnownAggregate`], never by name.
//! - **A new limit**: [`limits`], checked before planning.
//! - **Where cells are computed** (a data node): [`federation`]; the
//!   coordinator sends a cells plan through a [`federation::CellsRunner`],
//!   the node runs it with [`Engine::run_cells_plan`].
//! - **A new path that reads private data** (a data node, a tool): it opens
//!   an [`Engine`], sets its audit sink with [`Engine::with_audit`], and
//!   goes through [`Engine::query_before`], so that it audits the same way.
//!
//! ```no_run
//! # async fn demo() -> Result<(), seuil_engine::EngineError> {
//! use futures::TryStreamExt;
//! use seuil_engine::{Engine, EngineOptions, User};
//! use seuil_policies::PolicySource;
//!
//! let policy = PolicySource::new("snds.toml", seuil_policies::SNDS_POLICY);
//! let (engine, _warnings) =
//!     Engine::open_files(&policy, "data/demo".as_ref(), EngineOptions::default()).await?;
//! let alice = User::new("alice", "researcher");
//! let result = engine
//!     .query(&alice, "SELECT ben_res_dpt, count(*) FROM ir_ben_r GROUP BY 1")
//!     .await?;
//! println!("{} cells suppressed", result.report.cells_suppressed);
//! let batches: Vec<_> = result.stream.try_collect().await.unwrap();
//! # Ok(()) }
//! ```

pub mod audit;
pub mod budget;
pub mod cancellation;
pub mod catalog;
pub mod cells;
pub mod contributions;
pub mod error;
mod explain;
pub mod federation;
pub mod functions;
pub mod grouping_set_properties;
mod hints;
pub mod limits;
pub mod lineage;
pub mod options;
pub mod person_index;
mod query;
pub mod release;
pub mod rewrite;
pub mod rules;
pub mod session;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use seuil_policies::{Diagnostics, Policy, PolicySource, Role};

use audit::{AuditRecord, AuditSink, Outcome};
use cancellation::{CancelOnDrop, Cancellation};
pub use catalog::DataCatalog;
pub use catalog::{IndexOpening, PersonIndex};
use cells::ReleaseStep;
pub use error::{EngineError, ErrorKind, Place, Refusal, Rule};
pub use explain::Explanation;
pub use limits::Deadline;
pub use options::{EngineOptions, PersonIndexSetting};
pub use release::{NodeTraffic, ReleaseReport, SuppressedCell, SuppressionReason};
pub use session::session_config;

/// A user as the engine sees one: a name for the audit and a role for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    /// Role name in the policy.
    pub role: String,
}

impl User {
    /// A user with a role.
    pub fn new(name: impl Into<String>, role: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            role: role.into(),
        }
    }
}

/// A checked query, not yet run.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    /// One field per parameter (`1`, `2`, ...), typed when the planner could
    /// infer the type, `Null` otherwise.
    pub parameters: SchemaRef,
    /// The schema of the result, with the static release metadata.
    pub result: SchemaRef,
}

/// A query checked for one user and kept to be run once by the engine that
/// checked it ([`Engine::check_before`], [`Engine::run_checked_before`]), so
/// that it is not planned and rewritten again: what a Flight SQL
/// `GetFlightInfo` found, for its `DoGet`.
pub struct CheckedQuery {
    user: User,
    sql: String,
    prepared: PreparedQuery,
    /// The engine that checked it: the rewrite is reused there only.
    engine: std::sync::Weak<EngineInner>,
    /// The rewrite, for a query without parameters (one with parameters is
    /// rewritten again with their values).
    rewritten: Option<rewrite::RewrittenQuery>,
}

impl CheckedQuery {
    /// Who the query was checked for.
    pub fn user(&self) -> &User {
        &self.user
    }

    /// Its parameters and result schema.
    pub fn prepared(&self) -> &PreparedQuery {
        &self.prepared
    }
}

impl std::fmt::Debug for CheckedQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedQuery")
            .field("user", &self.user)
            .field("kept_rewrite", &self.rewritten.is_some())
            .finish_non_exhaustive()
    }
}

/// The result of a query: released cells as a stream, and the release report.
pub struct QueryResult {
    /// Output schema, with the release report as `seuil.*` metadata.
    pub schema: SchemaRef,
    /// The result, batch by batch.
    pub stream: SendableRecordBatchStream,
    /// What was released and suppressed.
    pub report: ReleaseReport,
    /// The rewritten plan, as text (for the audit log).
    pub rewritten_plan: String,
    /// Where the query's time went before its result started streaming.
    pub timings: QueryTimings,
}

/// Where a query's time went before its result started streaming: what the
/// benchmarks report to show the cost of each protection, and what a server
/// can log. Kept out of [`ReleaseReport`], which must not depend on timing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueryTimings {
    /// Parsing, planning, checking and rewriting.
    pub planning: Duration,
    /// Checking and charging the privacy budget ledger (dp mode), before
    /// any cell is computed.
    pub charging: Duration,
    /// Computing the cells of the released aggregates.
    pub computing_cells: Duration,
    /// Applying the release rules to those cells (thresholds, dominance,
    /// secondary suppression, rounding).
    pub release_rules: Duration,
    /// The part of `release_rules` spent choosing and auditing secondary
    /// suppressions.
    pub secondary_suppression: Duration,
}

impl std::fmt::Debug for QueryResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryResult")
            .field("schema", &self.schema)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

struct RoleRuntime {
    ctx: SessionContext,
    row_filters: BTreeMap<String, Expr>,
}

/// Runs `work` until `deadline`, if there is one.
async fn within<T>(
    deadline: Option<Deadline>,
    work: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.instant(), work)
            .await
            .unwrap_or_else(|_| Err(deadline.exceeded())),
        None => work.await,
    }
}

/// A role as one query uses it: its rules, its session, and the mechanism
/// that releases its cells.
struct RoleSetup<'a> {
    role: &'a Role,
    runtime: &'a RoleRuntime,
    mechanism: Arc<dyn release::ReleaseMechanism>,
}

struct EngineInner {
    policy: Policy,
    data: DataCatalog,
    roles: BTreeMap<String, RoleRuntime>,
    options: EngineOptions,
    /// The session in which plans received from a coordinator run (on a
    /// data node): no role's catalog, only the data's own tables.
    plans: SessionContext,
}

/// A cells plan running on a data node ([`Engine::run_cells_plan`]): its
/// cells, and what its scans read.
pub struct CellsPlanRun {
    /// The cells.
    pub stream: SendableRecordBatchStream,
    /// The plan's metrics, read once the stream has ended.
    pub metrics: CellsPlanMetrics,
}

impl std::fmt::Debug for CellsPlanRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellsPlanRun").finish_non_exhaustive()
    }
}

/// The metrics of a running cells plan (its physical plan's).
#[derive(Clone)]
pub struct CellsPlanMetrics(Arc<dyn datafusion::physical_plan::ExecutionPlan>);

impl CellsPlanMetrics {
    /// Bytes the plan's Parquet scans have read so far.
    pub fn bytes_scanned(&self) -> u64 {
        fn sum(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> usize {
            let own = plan
                .metrics()
                .and_then(|m| m.sum_by_name("bytes_scanned"))
                .map_or(0, |v| v.as_usize());
            own + plan
                .children()
                .iter()
                .map(|c| sum(c.as_ref()))
                .sum::<usize>()
        }
        u64::try_from(sum(self.0.as_ref())).unwrap_or(u64::MAX)
    }
}

impl std::fmt::Debug for CellsPlanMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellsPlanMetrics").finish_non_exhaustive()
    }
}

/// The query engine over one policy and one data folder. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
    /// Where this engine's queries are audited ([`audit`]); `None` for an
    /// engine that tests and tools use on their own.
    audit: Option<Arc<dyn AuditSink>>,
    /// Who runs the cells plans of tables held by data nodes, on a
    /// coordinator ([`federation`]).
    cells_runner: Option<Arc<dyn federation::CellsRunner>>,
    /// Where dp queries are charged ([`budget`]); an engine without one
    /// serves no dp role.
    budget: Option<Arc<budget::BudgetLedger>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.inner.policy.name)
            .field("data", &self.inner.data.location)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the data folder, checks the policy against it, and builds the
    /// engine, with its person index ([`person_index`]) as the options say.
    /// Returns the policy's warnings (such as data columns the policy does
    /// not mention).
    pub async fn open_files(
        policy: &PolicySource,
        data_dir: &Path,
        options: EngineOptions,
    ) -> Result<(Engine, Diagnostics), EngineError> {
        let data = DataCatalog::open(data_dir, &options).await?;
        Engine::open_validated(policy, data, options).await
    }

    /// [`Engine::open_files`] for a data node, whose folder holds its share
    /// of a deployment's tables: the policy's other tables are held by
    /// other nodes. The tables here must match the policy.
    pub async fn open_share(
        policy: &PolicySource,
        data_dir: &Path,
        options: EngineOptions,
    ) -> Result<(Engine, Diagnostics), EngineError> {
        let data = DataCatalog::open(data_dir, &options).await?.as_share();
        Engine::open_validated(policy, data, options).await
    }

    /// Loads the policy, validated against `data`, and opens the engine.
    async fn open_validated(
        policy: &PolicySource,
        data: DataCatalog,
        options: EngineOptions,
    ) -> Result<(Engine, Diagnostics), EngineError> {
        let (policy, warnings) = seuil_policies::load(policy, Some(&data.data_schema()))
            .map_err(|e| EngineError::Setup(e.to_string()))?;
        Ok((Engine::open(policy, data, options).await?, warnings))
    }

    /// An engine over a validated policy and opened data, with a person
    /// index as the options say. An index that cannot be built (a read-only
    /// folder, tables that are not files) is not an error: the engine then
    /// traces persons by joins, which gives the same results more slowly,
    /// and says so in the log.
    pub async fn open(
        policy: Policy,
        data: DataCatalog,
        options: EngineOptions,
    ) -> Result<Engine, EngineError> {
        let data = person_index::attach(&policy, data, &options).await;
        Engine::new(policy, data, options)
    }

    /// An engine over a validated policy and opened data (with the person
    /// index attached to `data`, if any).
    pub fn new(
        policy: Policy,
        data: DataCatalog,
        options: EngineOptions,
    ) -> Result<Engine, EngineError> {
        if data
            .person_index()
            .is_some_and(|index| !index.serves(&policy))
        {
            return Err(EngineError::Setup(
                "the person index was built for another policy's person paths".to_string(),
            ));
        }
        let runtime = session::runtime(&options)?;
        let mut roles = BTreeMap::new();
        for role in policy.roles.values() {
            let ctx = session::context(&options, Arc::clone(&runtime));
            rules::scopes::register_scoped_tables(&ctx, &policy, role, &data)?;
            let row_filters = rules::scopes::parse_row_filters(&ctx, role, &data)?;
            roles.insert(role.name.clone(), RoleRuntime { ctx, row_filters });
        }
        let plans = session::context(&options, runtime);
        Ok(Engine {
            inner: Arc::new(EngineInner {
                policy,
                data,
                roles,
                options,
                plans,
            }),
            audit: None,
            cells_runner: None,
            budget: None,
        })
    }

    /// The same engine, as a coordinator: the cells plans of tables its
    /// catalog reads on data nodes ([`federation::nodes::coordinator_catalog`])
    /// are sent to them through `runner`.
    pub fn with_cells_runner(mut self, runner: Arc<dyn federation::CellsRunner>) -> Engine {
        self.cells_runner = Some(runner);
        self
    }

    /// Runs a cells plan a coordinator sent (on a data node): decodes it
    /// against this engine's own tables, checks that it lets out cells only
    /// ([`federation::check_egress`]), and starts it. A plan that fails the
    /// check is refused before anything is read.
    pub async fn run_cells_plan(&self, plan: &[u8]) -> Result<CellsPlanRun, EngineError> {
        let ctx = &self.inner.plans;
        let plan = federation::decode_cells_plan(plan, &self.inner.data, &ctx.task_ctx())?;
        federation::check_egress(&plan, &self.inner.policy, &self.inner.data)?;
        let frame = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(query::planning_error)?;
        let physical = frame
            .create_physical_plan()
            .await
            .map_err(query::planning_error)?;
        let stream =
            datafusion::physical_plan::execute_stream(Arc::clone(&physical), ctx.task_ctx())
                .map_err(query::execution_error)?;
        Ok(CellsPlanRun {
            stream,
            metrics: CellsPlanMetrics(physical),
        })
    }

    /// What this engine holds, as a data node tells its coordinator: its
    /// tables' schemas and the rows of its public code lists.
    pub async fn node_catalog(&self) -> Result<federation::NodeCatalog, EngineError> {
        federation::NodeCatalog::with_public_rows(
            &self.inner.data,
            &self.inner.policy,
            &self.inner.plans,
        )
        .await
    }

    /// The same engine, auditing every query it checks or runs to `sink`:
    /// a line before it starts and one when it ends, each written before
    /// the query goes on ([`audit`]). The server and the CLI set one.
    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> Engine {
        self.audit = Some(sink);
        self
    }

    /// The same engine, charging dp queries to `ledger` before they read
    /// any data ([`budget`]). The server and the CLI share the ledger of a
    /// deployment.
    pub fn with_budget(mut self, ledger: Arc<budget::BudgetLedger>) -> Engine {
        self.budget = Some(ledger);
        self
    }

    /// The budget ledger, if the engine has one.
    pub fn budget(&self) -> Option<&Arc<budget::BudgetLedger>> {
        self.budget.as_ref()
    }

    /// Writes an audit line, if the engine audits.
    async fn audit(&self, record: AuditRecord) -> Result<(), EngineError> {
        match &self.audit {
            Some(sink) => sink.append(record).await.map_err(|unavailable| {
                tracing::error!(%unavailable, "audit log");
                EngineError::Audit(unavailable.to_string())
            }),
            None => Ok(()),
        }
    }

    /// Audits the end of a query that failed, and gives its error back (or
    /// the audit's own, if the line cannot be written).
    async fn audit_failure(&self, record: AuditRecord, error: EngineError) -> EngineError {
        tracing::info!(
            user = %record.user,
            rule = error.refusal().map_or("-", |r| r.rule.code()),
            error = error.kind().code(),
            "query not run"
        );
        match self.audit(record.failed(&error)).await {
            Ok(()) => error,
            Err(audit_failure) => audit_failure,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The raw data (for tools that compare with unprotected results).
    pub fn data(&self) -> &DataCatalog {
        &self.inner.data
    }

    /// The session in which a role's queries are planned: its catalog holds
    /// only the role's scoped tables, so catalog browsing answers within the
    /// scope.
    pub fn role_context(&self, role: &str) -> Option<&SessionContext> {
        self.inner.roles.get(role).map(|r| &r.ctx)
    }

    fn role(&self, user: &User) -> Result<RoleSetup<'_>, EngineError> {
        let role = self
            .inner
            .policy
            .roles
            .get(&user.role)
            .ok_or_else(|| EngineError::UnknownRole(user.role.clone()))?;
        let runtime = self
            .inner
            .roles
            .get(&user.role)
            .ok_or_else(|| EngineError::UnknownRole(user.role.clone()))?;
        Ok(RoleSetup {
            role,
            runtime,
            mechanism: release::mechanism_for(role, &self.inner.options)?,
        })
    }

    async fn rewrite(
        &self,
        user: &User,
        sql: &str,
        params: &[ScalarValue],
    ) -> Result<(RoleSetup<'_>, rewrite::RewrittenQuery), EngineError> {
        let setup = self.role(user)?;
        let plan =
            query::plan_user_query(&setup.runtime.ctx, sql, &self.inner.options, params).await?;
        let rewritten = self.rewrite_plan(&setup, &plan)?;
        Ok((setup, rewritten))
    }

    /// The privacy rewrite of a planned query, for the role of `setup`.
    fn rewrite_plan(
        &self,
        setup: &RoleSetup<'_>,
        plan: &LogicalPlan,
    ) -> Result<rewrite::RewrittenQuery, EngineError> {
        rewrite::PrivacyRewrite::new(
            &self.inner.policy,
            setup.role,
            &self.inner.data,
            &setup.runtime.row_filters,
            setup.mechanism.cells_needs(),
        )
        .run(plan)
    }

    /// Checks a query without running it, for prepared statements: its
    /// parameters (`$1`, `$2`, ...) and the schema its result will have. The
    /// schema carries the static release metadata (policy, mode, threshold);
    /// the counts of released cells come with each result.
    pub async fn prepare(&self, user: &User, sql: &str) -> Result<PreparedQuery, EngineError> {
        self.prepare_before(user, sql, None).await
    }

    /// [`Engine::prepare`], stopped at `deadline` if it has one. Checking a
    /// query reads no private data: only a failed check is audited.
    pub async fn prepare_before(
        &self,
        user: &User,
        sql: &str,
        deadline: Option<Deadline>,
    ) -> Result<PreparedQuery, EngineError> {
        Ok(self.check_before(user, sql, deadline).await?.prepared)
    }

    /// Checks a query as [`Engine::prepare_before`] does, and keeps what the
    /// check found so that [`Engine::run_checked_before`] runs it without
    /// planning it again.
    pub async fn check_before(
        &self,
        user: &User,
        sql: &str,
        deadline: Option<Deadline>,
    ) -> Result<CheckedQuery, EngineError> {
        let record = AuditRecord::new(&user.name, &user.role, sql, Outcome::Error);
        match within(deadline, self.check(user, sql)).await {
            Ok(checked) => Ok(checked),
            Err(error) => Err(self.audit_failure(record, error).await),
        }
    }

    async fn check(&self, user: &User, sql: &str) -> Result<CheckedQuery, EngineError> {
        let setup = self.role(user)?;
        let statement = query::plan_statement(&setup.runtime.ctx, sql, &self.inner.options).await?;
        let fields = query::parameter_fields(&statement)?;
        // Typed NULLs stand for the parameters while the rewrite checks the query.
        let placeholders: Vec<ScalarValue> = fields
            .iter()
            .map(|(_, field)| {
                field
                    .as_ref()
                    .and_then(|f| ScalarValue::try_from(f.data_type()).ok())
                    .unwrap_or(ScalarValue::Null)
            })
            .collect();
        let parameters = Arc::new(Schema::new(
            fields
                .iter()
                .map(|(id, field)| {
                    let data_type = field
                        .as_ref()
                        .map_or(datafusion::arrow::datatypes::DataType::Null, |f| {
                            f.data_type().clone()
                        });
                    datafusion::arrow::datatypes::Field::new(
                        id.trim_start_matches('$'),
                        data_type,
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        ));
        let plan = query::prepare_statement_plan(&setup.runtime.ctx, statement, &placeholders)?;
        let rewritten = self.rewrite_plan(&setup, &plan)?;
        let mut report = ReleaseReport::new(&self.inner.policy, setup.role);
        // A dp query's cost is known now: the statement tells it before
        // anything runs.
        report.dp = setup.mechanism.cost(&rewritten.releases)?;
        release::name_noisy_values(&mut report, &rewritten.plan, &rewritten.releases);
        let result = release::with_field_metadata(
            Schema::new_with_metadata(
                rewritten.plan.schema().as_arrow().fields().clone(),
                report.static_metadata(),
            ),
            &release::noisy_fields(&rewritten.plan, &rewritten.releases, &report),
        );
        Ok(CheckedQuery {
            user: user.clone(),
            sql: sql.to_string(),
            prepared: PreparedQuery { parameters, result },
            engine: Arc::downgrade(&self.inner),
            rewritten: fields.is_empty().then_some(rewritten),
        })
    }

    /// Runs a query for a user: checks and rewrites it, computes and
    /// releases its cells, and streams the result.
    pub async fn query(&self, user: &User, sql: &str) -> Result<QueryResult, EngineError> {
        self.query_with_params(user, sql, Vec::new()).await
    }

    /// Runs a query whose `$1`, `$2`, ... parameters take `params`, in order.
    pub async fn query_with_params(
        &self,
        user: &User,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult, EngineError> {
        self.query_before(user, sql, params, None).await
    }

    /// [`Engine::query_with_params`], stopped at `deadline` if it has one
    /// (the release step too: its work is cancelled with the query). An
    /// auditing engine writes the query's first line before planning and its
    /// last before the result can stream.
    pub async fn query_before(
        &self,
        user: &User,
        sql: &str,
        params: Vec<ScalarValue>,
        deadline: Option<Deadline>,
    ) -> Result<QueryResult, EngineError> {
        self.query_audited(user, sql, params, None, deadline).await
    }

    /// Runs a query that this engine checked ([`Engine::check_before`]),
    /// stopped at `deadline` if it has one, with the rewrite the check kept
    /// (a query checked by another engine is planned again). It is audited
    /// as [`Engine::query_before`] audits.
    pub async fn run_checked_before(
        &self,
        checked: CheckedQuery,
        deadline: Option<Deadline>,
    ) -> Result<QueryResult, EngineError> {
        let CheckedQuery {
            user,
            sql,
            engine,
            rewritten,
            ..
        } = checked;
        let kept = rewritten.filter(|_| std::ptr::eq(engine.as_ptr(), Arc::as_ptr(&self.inner)));
        self.query_audited(&user, &sql, Vec::new(), kept, deadline)
            .await
    }

    async fn query_audited(
        &self,
        user: &User,
        sql: &str,
        params: Vec<ScalarValue>,
        kept: Option<rewrite::RewrittenQuery>,
        deadline: Option<Deadline>,
    ) -> Result<QueryResult, EngineError> {
        let started = AuditRecord::started(&user.name, &user.role, sql, &params);
        // On disk before the engine runs: a query that brings the process
        // down leaves this line.
        self.audit(started.clone()).await?;
        let query_id = started.query_id.clone().unwrap_or_default();
        // A dp query charged and then stopped (an error, the deadline, a
        // node that died) still has its charge on its audit line.
        let charged = std::sync::OnceLock::new();
        let running = self.run(user, sql, params, kept, &query_id, &charged);
        match within(deadline, running).await {
            Ok(result) => {
                let ended = started
                    .next(Outcome::Ok)
                    .released(&result.report, &result.rewritten_plan);
                self.audit(ended).await?;
                Ok(result)
            }
            Err(error) => {
                let ended = started.next(Outcome::Error).charged(charged.get());
                Err(self.audit_failure(ended, error).await)
            }
        }
    }

    async fn run(
        &self,
        user: &User,
        sql: &str,
        params: Vec<ScalarValue>,
        kept: Option<rewrite::RewrittenQuery>,
        query_id: &str,
        charged: &std::sync::OnceLock<budget::Charge>,
    ) -> Result<QueryResult, EngineError> {
        let started = Instant::now();
        let (setup, rewritten) = match kept {
            Some(rewritten) => (self.role(user)?, rewritten),
            None => self.rewrite(user, sql, &params).await?,
        };
        let mut timings = QueryTimings {
            planning: started.elapsed(),
            ..QueryTimings::default()
        };
        let mut report = self
            .release(user, &setup, &rewritten, &mut timings, query_id, charged)
            .await?;
        release::name_noisy_values(&mut report, &rewritten.plan, &rewritten.releases);
        let runtime = setup.runtime;
        let rewritten_plan = rewritten.plan.display_indent().to_string();
        let noisy = release::noisy_fields(&rewritten.plan, &rewritten.releases, &report);
        let stream = query::stream(&runtime.ctx, rewritten.plan).await?;
        let schema: SchemaRef = release::with_field_metadata(
            Schema::new_with_metadata(stream.schema().fields().clone(), report.metadata()),
            &noisy,
        );
        let output_schema = Arc::clone(&schema);
        let released = stream.map(move |batch| {
            batch
                .and_then(|b| {
                    b.with_schema(Arc::clone(&output_schema))
                        .map_err(DataFusionError::from)
                })
                .map_err(|e| DataFusionError::External(Box::new(query::execution_error(e))))
        });
        Ok(QueryResult {
            schema: Arc::clone(&schema),
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, released)),
            report,
            rewritten_plan,
            timings,
        })
    }

    /// Computes the cells of each released aggregate of a rewritten query
    /// and has the role's mechanism release them, so that the rest of the
    /// plan reads released cells only.
    async fn release(
        &self,
        user: &User,
        setup: &RoleSetup<'_>,
        rewritten: &rewrite::RewrittenQuery,
        timings: &mut QueryTimings,
        query_id: &str,
        charged: &std::sync::OnceLock<budget::Charge>,
    ) -> Result<ReleaseReport, EngineError> {
        let mut report = ReleaseReport::new(&self.inner.policy, setup.role);
        let groups = release::release_groups(&rewritten.releases)?;
        if let Some(cost) = setup.mechanism.cost(&rewritten.releases)? {
            // Charged before any cell is computed: a crash from here on
            // leaves budget spent and nothing released.
            let charging = Instant::now();
            let cost = self.charge(user, setup.role, query_id, cost).await?;
            timings.charging = charging.elapsed();
            if let Some(charge) = &cost.charge {
                // Set once: a query is charged once.
                let _ = charged.set(charge.clone());
            }
            report.dp = Some(cost);
        }
        let cancellation = Cancellation::default();
        let _cancel_on_drop = CancelOnDrop(cancellation.clone());
        let mut computed: Vec<Option<Vec<RecordBatch>>> =
            rewritten.releases.iter().map(|_| None).collect();
        for (i, step) in rewritten.releases.iter().enumerate() {
            let computing = Instant::now();
            let (cells, traffic) = self.cells(setup, step, query_id).await?;
            if let Some(traffic) = traffic {
                report.add_traffic(&traffic);
            }
            computed[i] = Some(cells);
            timings.computing_cells += computing.elapsed();
            // A group of aggregates over the same rows is released once its
            // last member is computed, so that their margins are protected
            // together.
            for group in groups.iter().filter(|g| g.last() == Some(&i)) {
                let releasing = Instant::now();
                let steps: Vec<ReleaseStep> = group
                    .iter()
                    .map(|&j| rewritten.releases[j].clone())
                    .collect();
                let cells = group
                    .iter()
                    .map(|&j| {
                        computed[j]
                            .take()
                            .ok_or_else(|| EngineError::internal("cells released twice"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                // The release is CPU work that may be long (the attacker's
                // linear programs): it runs off the async threads, and stops
                // when the query is dropped (timeout, client gone).
                let mechanism = Arc::clone(&setup.mechanism);
                let cancel = cancellation.clone();
                let (released, returned) = tokio::task::spawn_blocking(move || {
                    let steps: Vec<&ReleaseStep> = steps.iter().collect();
                    let released = mechanism.release(&steps, cells, &mut report, &cancel);
                    (released, report)
                })
                .await
                .map_err(|_| EngineError::internal("the release step stopped"))?;
                report = returned;
                timings.secondary_suppression += released?;
                timings.release_rules += releasing.elapsed();
            }
        }
        Ok(report)
    }

    /// Charges a dp query's `cost` to `user` and the role's project, in the
    /// ledger, before anything is read; refuses it when the budget is
    /// spent.
    async fn charge(
        &self,
        user: &User,
        role: &Role,
        query_id: &str,
        mut cost: release::DpRelease,
    ) -> Result<release::DpRelease, EngineError> {
        let Some(ledger) = self.budget.clone() else {
            return Err(EngineError::Setup(
                "this engine keeps no privacy budget ledger, so it serves no dp role".to_string(),
            ));
        };
        let settings = role
            .dp
            .ok_or_else(|| EngineError::internal("a dp cost for a role without dp settings"))?;
        let limits = budget::BudgetLimits::of(&settings);
        // An engine without an audit log has no query id: the charge gets
        // its own.
        let charge_id = if query_id.is_empty() {
            audit::new_query_id()
        } else {
            query_id.to_string()
        };
        let (user_name, project) = (user.name.clone(), role.name.clone());
        let (epsilon, delta) = (cost.epsilon, cost.delta);
        let charge = tokio::task::spawn_blocking(move || {
            let payer = budget::Payer {
                user: &user_name,
                project: &project,
            };
            ledger.charge(&payer, &charge_id, epsilon, delta, &limits)
        })
        .await
        .map_err(|_| EngineError::internal("the budget charge stopped"))??;
        cost.charge = Some(charge);
        Ok(cost)
    }

    /// The cells of one released aggregate: computed here, or on the data
    /// node that holds its tables, with what that node moved.
    async fn cells(
        &self,
        setup: &RoleSetup<'_>,
        step: &ReleaseStep,
        query_id: &str,
    ) -> Result<(Vec<RecordBatch>, Option<NodeTraffic>), EngineError> {
        let max_cells = self.inner.options.max_cells;
        let data = &self.inner.data;
        let Some(node) = federation::nodes::node_of(&step.cells, data, &self.inner.policy)? else {
            let cells = query::collect(&setup.runtime.ctx, step.cells.clone(), max_cells).await?;
            return Ok((cells, None));
        };
        let Some(runner) = &self.cells_runner else {
            return Err(EngineError::Setup(format!(
                "the query reads tables of data node {node}, and this engine reaches no node"
            )));
        };
        let plan = federation::encode_cells_plan(&step.cells, data)?;
        let cells = runner.run(&node, query_id, plan, max_cells).await?;
        // The runner bounds what it receives; this holds whatever it does.
        if cells
            .batches
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>()
            > max_cells
        {
            return Err(EngineError::too_many_cells(max_cells));
        }
        Ok((cells.batches, Some(cells.traffic)))
    }

    /// Shows how a query is rewritten, without running it.
    pub async fn explain(&self, user: &User, sql: &str) -> Result<Explanation, EngineError> {
        let (setup, rewritten) = self.rewrite(user, sql, &[]).await?;
        let mut report = ReleaseReport::new(&self.inner.policy, setup.role);
        report.dp = setup.mechanism.cost(&rewritten.releases)?;
        release::name_noisy_values(&mut report, &rewritten.plan, &rewritten.releases);
        let cost = match &report.dp {
            Some(dp) => {
                let left = match (&self.budget, setup.role.dp) {
                    (Some(ledger), Some(settings)) => {
                        let payer = budget::Payer {
                            user: &user.name,
                            project: &setup.role.name,
                        };
                        Some(ledger.left(&payer, &budget::BudgetLimits::of(&settings))?.0)
                    }
                    _ => None,
                };
                explain::describe_cost(dp, left)
            }
            None => Vec::new(),
        };
        explain::explain(&rewritten, setup.role, cost)
    }
}

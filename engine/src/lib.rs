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
//! registered functions, so it runs in-process here and can run on data nodes
//! or Ballista. Execution is in two phases: the cells of each released
//! aggregate are computed and go through the release step on the
//! coordinator; then the rest of the query runs over released cells only and
//! streams its result. Nothing in the second phase can read private rows.
//!
//! The engine knows no network protocol: the Flight SQL server and the CLI
//! (`flight-server`) turn requests into [`Engine::query`] calls.
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

pub mod catalog;
pub mod cells;
pub mod error;
mod explain;
pub mod limits;
pub mod person_index;
mod query;
pub mod release;
pub mod rewrite;
pub mod rules;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use seuil_policies::{Diagnostics, Mode, Policy, PolicySource, Role};

pub use catalog::DataCatalog;
pub use error::{EngineError, Place, Refusal, Rule};
pub use explain::Explanation;
pub use person_index::{IndexOpening, PersonIndex, PersonIndexSetting};
pub use release::{ReleaseReport, SuppressedCell, SuppressionReason};
use rules::min_persons::ReleaseStep;

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

/// Limits and resources of an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Memory for query execution; beyond it, operators spill to disk or the
    /// query fails with a limit error. `None` for no limit.
    pub memory_limit_bytes: Option<usize>,
    /// Parallelism of each query; the number of cores when `None`.
    pub target_partitions: Option<usize>,
    /// Longest SQL text accepted, in bytes.
    pub max_sql_bytes: usize,
    /// Deepest nesting of the SQL accepted (parser recursion).
    pub max_nesting: usize,
    /// The size of a query accepted, checked before planning.
    pub limits: limits::QueryLimits,
    /// Most cells one released aggregate may have (they are held in memory
    /// for the release step).
    pub max_cells: usize,
    /// Where the person index is kept ([`person_index`]).
    pub person_index: PersonIndexSetting,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            memory_limit_bytes: None,
            target_partitions: None,
            max_sql_bytes: 100_000,
            max_nesting: 64,
            limits: limits::QueryLimits::default(),
            max_cells: 1_000_000,
            person_index: PersonIndexSetting::default(),
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

struct EngineInner {
    policy: Policy,
    data: DataCatalog,
    roles: BTreeMap<String, RoleRuntime>,
    options: EngineOptions,
}

/// The query engine over one policy and one data folder. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.inner.policy.name)
            .field("data", &self.inner.data.location)
            .finish_non_exhaustive()
    }
}

/// The DataFusion settings every seuil session uses.
pub fn session_config(options: &EngineOptions) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema("seuil", "public")
        .with_information_schema(true);
    if let Some(partitions) = options.target_partitions {
        config = config.with_target_partitions(partitions);
    }
    let settings = config.options_mut();
    // Refusals point at the place in the SQL.
    settings.sql_parser.collect_spans = true;
    // Plain UTF-8 strings: the view types are not understood by every client.
    settings.execution.parquet.schema_force_view_types = false;
    if let Ok(limit) = datafusion::config::ConfigNonZeroUsize::try_new(options.max_nesting) {
        settings.sql_parser.recursion_limit = limit;
    }
    config
}

fn runtime(options: &EngineOptions) -> Result<Arc<RuntimeEnv>, EngineError> {
    let mut builder = RuntimeEnvBuilder::new();
    if let Some(limit) = options.memory_limit_bytes {
        builder = builder.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    builder
        .build_arc()
        .map_err(|e| EngineError::Setup(format!("cannot set up the query runtime: {e}")))
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
        let root = match &options.person_index {
            PersonIndexSetting::Off => None,
            PersonIndexSetting::InDataFolder => Some(data.location.join(".seuil-index")),
            PersonIndexSetting::Folder(folder) => Some(folder.clone()),
        };
        let data = match root {
            None => data,
            Some(root) => match PersonIndex::open_or_build(&policy, &data, &root).await {
                // How long a build took is for the caller to tell
                // (`PersonIndex::opening`): the CLI prints it.
                Ok(index) => data.with_person_index(index),
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "no person index: queries join each private table to its persons"
                    );
                    data
                }
            },
        };
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
        let runtime = runtime(&options)?;
        let mut roles = BTreeMap::new();
        for role in policy.roles.values() {
            let ctx =
                SessionContext::new_with_config_rt(session_config(&options), Arc::clone(&runtime));
            rules::scopes::register_scoped_tables(&ctx, &policy, role, &data)?;
            let row_filters = rules::scopes::parse_row_filters(&ctx, role, &data)?;
            roles.insert(role.name.clone(), RoleRuntime { ctx, row_filters });
        }
        Ok(Engine {
            inner: Arc::new(EngineInner {
                policy,
                data,
                roles,
                options,
            }),
        })
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

    fn role(&self, user: &User) -> Result<(&Role, &RoleRuntime), EngineError> {
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
        if role.mode == Mode::Dp {
            return Err(EngineError::refused(
                Rule::Mode,
                format!(
                    "role {} is in differential privacy mode, which this version of seuil does not serve yet; no result is released rather than an unprotected one",
                    role.name
                ),
                "ask for a threshold-mode role",
            ));
        }
        Ok((role, runtime))
    }

    async fn rewrite(
        &self,
        user: &User,
        sql: &str,
        params: &[ScalarValue],
    ) -> Result<(&Role, &RoleRuntime, rewrite::RewrittenQuery), EngineError> {
        let (role, runtime) = self.role(user)?;
        let plan = query::plan_user_query(&runtime.ctx, sql, &self.inner.options, params).await?;
        let rewritten = rewrite::PrivacyRewrite::new(
            &self.inner.policy,
            role,
            &self.inner.data,
            &runtime.row_filters,
        )
        .run(&plan)?;
        Ok((role, runtime, rewritten))
    }

    /// Checks a query without running it, for prepared statements: its
    /// parameters (`$1`, `$2`, ...) and the schema its result will have. The
    /// schema carries the static release metadata (policy, mode, threshold);
    /// the counts of released cells come with each result.
    pub async fn prepare(&self, user: &User, sql: &str) -> Result<PreparedQuery, EngineError> {
        let (role, runtime) = self.role(user)?;
        let plan = query::plan_statement(&runtime.ctx, sql, &self.inner.options).await?;
        let fields = query::parameter_fields(&plan)?;
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
        let (_, _, rewritten) = self.rewrite(user, sql, &placeholders).await?;
        let report = ReleaseReport::new(&self.inner.policy, role);
        let result = Arc::new(Schema::new_with_metadata(
            rewritten.plan.schema().as_arrow().fields().clone(),
            report.static_metadata(),
        ));
        Ok(PreparedQuery { parameters, result })
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
        let started = Instant::now();
        let (role, runtime, rewritten) = self.rewrite(user, sql, &params).await?;
        let mut timings = QueryTimings {
            planning: started.elapsed(),
            ..QueryTimings::default()
        };
        let mut report = ReleaseReport::new(&self.inner.policy, role);
        let groups = release::release_groups(&rewritten.releases)?;
        let cancellation = release::Cancellation::default();
        let _cancel_on_drop = release::CancelOnDrop(cancellation.clone());
        let mut computed: Vec<Option<release::ComputedCells>> =
            rewritten.releases.iter().map(|_| None).collect();
        for (i, step) in rewritten.releases.iter().enumerate() {
            let computing = Instant::now();
            let cells = query::collect(
                &runtime.ctx,
                step.cells.clone(),
                self.inner.options.max_cells,
            )
            .await?;
            timings.computing_cells += computing.elapsed();
            let releasing = Instant::now();
            computed[i] = Some(release::primary(step, cells, role)?);
            // A group of aggregates over the same rows is released once its
            // last member is computed, so that their margins are protected
            // together.
            for group in groups.iter().filter(|g| g.last() == Some(&i)) {
                let steps: Vec<&ReleaseStep> =
                    group.iter().map(|&j| &rewritten.releases[j]).collect();
                let cells = group
                    .iter()
                    .map(|&j| {
                        computed[j]
                            .take()
                            .ok_or_else(|| EngineError::internal("cells released twice"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                // The attacker's linear programs are CPU work that may be
                // long: they run off the async threads, and stop when the
                // query is dropped (timeout, client gone).
                let steps: Vec<ReleaseStep> = steps.into_iter().cloned().collect();
                let owned_role = role.clone();
                let cancel = cancellation.clone();
                let mut owned_report =
                    std::mem::replace(&mut report, ReleaseReport::new(&self.inner.policy, role));
                let (released, returned) = tokio::task::spawn_blocking(move || {
                    let steps: Vec<&ReleaseStep> = steps.iter().collect();
                    let released =
                        release::release(&steps, cells, &owned_role, &mut owned_report, &cancel);
                    (released, owned_report)
                })
                .await
                .map_err(|_| EngineError::internal("the release step stopped"))?;
                report = returned;
                timings.secondary_suppression += released?;
            }
            timings.release_rules += releasing.elapsed();
        }
        let rewritten_plan = rewritten.plan.display_indent().to_string();
        let stream = query::stream(&runtime.ctx, rewritten.plan).await?;
        let schema: SchemaRef = Arc::new(Schema::new_with_metadata(
            stream.schema().fields().clone(),
            report.metadata(),
        ));
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

    /// Shows how a query is rewritten, without running it.
    pub async fn explain(&self, user: &User, sql: &str) -> Result<Explanation, EngineError> {
        let (role, _, rewritten) = self.rewrite(user, sql, &[]).await?;
        explain::explain(&rewritten, role)
    }
}

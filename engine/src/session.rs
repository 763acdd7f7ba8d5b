//! The DataFusion sessions of the engine: one configuration and one runtime
//! for all of them, and seuil's aggregate functions registered in each
//! ([`crate::functions`]), so that a plan built in one session resolves in
//! any other.

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::contributions::ordered_sums::OrderedSumsRule;
use crate::contributions::planning::{PersonOrderRule, SeuilQueryPlanner};
use crate::error::EngineError;
use crate::functions;
use crate::grouping_set_properties::GroupingSetOutputRule;
use crate::options::EngineOptions;

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
    // Each partition reads its own byte ranges of a file, in order: the
    // passes over keyed tables in person order rely on it (a partition that
    // took another's range would read persons out of order, or a person in
    // two partitions' middles, and fail).
    settings.execution.enable_file_stream_work_stealing = false;
    if let Ok(limit) = datafusion::config::ConfigNonZeroUsize::try_new(options.max_nesting) {
        settings.sql_parser.recursion_limit = limit;
    }
    config
}

/// The query runtime of an engine: its memory pool, shared by every role's
/// session, so that the limit holds for the engine as a whole.
pub fn runtime(options: &EngineOptions) -> Result<Arc<RuntimeEnv>, EngineError> {
    let mut builder = RuntimeEnvBuilder::new();
    if let Some(limit) = options.memory_limit_bytes {
        builder = builder.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    builder
        .build_arc()
        .map_err(|e| EngineError::Setup(format!("cannot set up the query runtime: {e}")))
}

/// A session with seuil's settings and functions, on `runtime`.
pub fn context(options: &EngineOptions, runtime: Arc<RuntimeEnv>) -> SessionContext {
    // DataFusion's physical optimizer rules, after seuil's correction of
    // what grouping sets' outputs claim (it must come first, so that every
    // rule after it plans with true properties).
    let mut rules: Vec<
        Arc<dyn datafusion::physical_optimizer::PhysicalOptimizerRule + Send + Sync>,
    > = vec![Arc::new(GroupingSetOutputRule)];
    rules.extend(PhysicalOptimizer::new().rules);
    // Last, so that no rule after it spreads a person's rows again.
    rules.push(Arc::new(OrderedSumsRule));
    rules.push(Arc::new(PersonOrderRule));
    let state = SessionStateBuilder::new()
        .with_config(session_config(options))
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rules(rules)
        .with_query_planner(Arc::new(SeuilQueryPlanner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    functions::register(&ctx);
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(
        functions::ContributionChoice::new(options.contribution_key.bytes()),
    ));
    ctx
}

/// A session with seuil's settings and functions, on a runtime of its own
/// (for work outside queries: opening data, building the person index).
pub fn standalone_context(options: &EngineOptions) -> SessionContext {
    let runtime = Arc::new(RuntimeEnv::default());
    context(options, runtime)
}

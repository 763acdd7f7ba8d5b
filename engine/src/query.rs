//! From SQL text to released results: parse, plan against the role's scoped
//! catalog, rewrite, compute and release the cells, run the rest.

use std::sync::Arc;

use datafusion::common::DataFusionError;
use datafusion::config::Dialect;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::decorrelate_lateral_join::DecorrelateLateralJoin;
use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
use datafusion::optimizer::eliminate_cross_join::EliminateCrossJoin;
use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
use datafusion::optimizer::replace_distinct_aggregate::ReplaceDistinctWithAggregate;
use datafusion::optimizer::rewrite_set_comparison::RewriteSetComparison;
use datafusion::optimizer::scalar_subquery_to_join::ScalarSubqueryToJoin;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::parser::ParserError;

use crate::error::EngineError;
use crate::limits;
use crate::options::EngineOptions;
use crate::rules::read_only;

/// Maps a DataFusion error met while parsing or planning. Planning reads no
/// data, so its messages hold the query's own words and names of the role's
/// scope only.
pub(crate) fn planning_error(error: DataFusionError) -> EngineError {
    match error.find_root() {
        DataFusionError::SQL(sql_error, _) => match sql_error.as_ref() {
            ParserError::RecursionLimitExceeded => {
                EngineError::Limit("the query is nested too deeply".into())
            }
            other => EngineError::InvalidQuery(other.to_string()),
        },
        DataFusionError::ResourcesExhausted(_) => {
            EngineError::Limit("the query needs more resources than allowed".into())
        }
        // DataFusion's own accessor gives these without their kind's prefix
        // ("Error during planning: ", "Schema error: ", ...).
        root @ (DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)) => {
            EngineError::InvalidQuery(root.message().into_owned())
        }
        root => EngineError::InvalidQuery(root.to_string()),
    }
}

/// Maps a DataFusion error met while running. Such messages can quote data
/// (a failed cast prints the value), so only the kind of failure is kept.
pub(crate) fn execution_error(error: DataFusionError) -> EngineError {
    match error.find_root() {
        DataFusionError::ResourcesExhausted(_) => {
            EngineError::Limit("the query needs more memory than allowed".into())
        }
        DataFusionError::ExecutionJoin(join) if join.is_cancelled() => {
            EngineError::Execution("the query was cancelled".into())
        }
        root => {
            tracing::warn!(kind = error_kind(root), "query failed while running");
            EngineError::Execution(format!("{} error", error_kind(root)))
        }
    }
}

fn error_kind(error: &DataFusionError) -> &'static str {
    match error {
        DataFusionError::ArrowError(..) => "arrow",
        DataFusionError::ParquetError(..) => "storage",
        DataFusionError::IoError(..) | DataFusionError::ObjectStore(..) => "storage",
        DataFusionError::Execution(..) | DataFusionError::ExecutionJoin(..) => "execution",
        DataFusionError::Internal(..) => "internal",
        _ => "engine",
    }
}

/// Parses and plans `sql` against the role's scoped catalog, then runs the
/// analyzer and the rules that turn subqueries and comma joins into joins, so
/// that the privacy rewrite sees every relation as a plan node.
pub(crate) async fn plan_user_query(
    ctx: &SessionContext,
    sql: &str,
    options: &EngineOptions,
    params: &[ScalarValue],
) -> Result<LogicalPlan, EngineError> {
    let plan = plan_statement(ctx, sql, options).await?;
    prepare_statement_plan(ctx, plan, params)
}

/// [`plan_user_query`] from the plan of the statement ([`plan_statement`]),
/// for callers that planned it already.
pub(crate) fn prepare_statement_plan(
    ctx: &SessionContext,
    plan: LogicalPlan,
    params: &[ScalarValue],
) -> Result<LogicalPlan, EngineError> {
    let plan = if params.is_empty() {
        plan
    } else {
        plan.with_param_values(params.to_vec())
            .map_err(planning_error)?
    };
    let state = ctx.state();
    let analyzed = state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})
        .map_err(planning_error)?;
    let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
        Arc::new(RewriteSetComparison::new()),
        Arc::new(ReplaceDistinctWithAggregate::new()),
        Arc::new(DecorrelatePredicateSubquery::new()),
        Arc::new(ScalarSubqueryToJoin::new()),
        Arc::new(DecorrelateLateralJoin::new()),
        Arc::new(ExtractEquijoinPredicate::new()),
        Arc::new(EliminateCrossJoin::new()),
    ];
    Optimizer::with_rules(rules)
        .optimize(analyzed, &state, |_, _| {})
        .map_err(planning_error)
}

/// Parses and plans one query statement, refusing every other statement.
/// The query's size is checked before each step that grows with it.
pub(crate) async fn plan_statement(
    ctx: &SessionContext,
    sql: &str,
    options: &EngineOptions,
) -> Result<LogicalPlan, EngineError> {
    if sql.len() > options.max_sql_bytes {
        return Err(EngineError::Limit(format!(
            "the query is {} bytes long; the limit is {}",
            sql.len(),
            options.max_sql_bytes
        )));
    }
    limits::check_text(sql, &options.limits)?;
    let state = ctx.state();
    let statement = state
        .sql_to_statement(sql, &Dialect::Generic)
        .map_err(planning_error)?;
    read_only::check_statement(&statement)?;
    limits::check_statement(&statement, &options.limits)?;
    state
        .statement_to_plan(statement)
        .await
        .map_err(planning_error)
}

/// The query's parameters (`$1`, `$2`, ...) in order, with their types when
/// the planner could infer them.
pub(crate) fn parameter_fields(
    plan: &LogicalPlan,
) -> Result<Vec<(String, Option<datafusion::arrow::datatypes::FieldRef>)>, EngineError> {
    let mut fields: Vec<_> = plan
        .get_parameter_fields()
        .map_err(planning_error)?
        .into_iter()
        .collect();
    fields.sort_by_key(|(id, _)| {
        id.trim_start_matches('$')
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    Ok(fields)
}

/// Runs a plan and collects its result, the cells of one released
/// aggregate: at most `max_cells` of them, which the release step holds in
/// memory outside the query pool.
pub(crate) async fn collect(
    ctx: &SessionContext,
    plan: LogicalPlan,
    max_cells: usize,
) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>, EngineError> {
    use futures::StreamExt;
    let frame = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(planning_error)?;
    let mut stream = frame.execute_stream().await.map_err(execution_error)?;
    let mut batches = Vec::new();
    let mut cells = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(execution_error)?;
        cells += batch.num_rows();
        if cells > max_cells {
            return Err(EngineError::too_many_cells(max_cells));
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// Runs a plan as a stream.
pub(crate) async fn stream(
    ctx: &SessionContext,
    plan: LogicalPlan,
) -> Result<SendableRecordBatchStream, EngineError> {
    let frame = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(planning_error)?;
    frame.execute_stream().await.map_err(execution_error)
}

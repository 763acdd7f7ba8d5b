//! Which released aggregates of a query are released together: those over
//! the same rows form one table with margins.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;

use crate::cells::ReleaseStep;
use crate::error::{EngineError, Rule};

/// The groups in which the released aggregates of a query are released, in
/// the order their last member is computed: aggregates over the same rows
/// (same [`crate::rules::margins::MarginShape::family`]) form one group,
/// whose margins are protected together; every other aggregate is a group
/// of its own. Refuses a query where an aggregate of a group reads the
/// released cells of an earlier member (that member could not wait for the
/// group).
pub fn release_groups(steps: &[ReleaseStep]) -> Result<Vec<Vec<usize>>, EngineError> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|g| steps[g[0]].margins.family == step.margins.family)
        {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    for group in groups.iter().filter(|g| g.len() > 1) {
        let (first, last) = (group[0], group[group.len() - 1]);
        for (reader, step) in steps.iter().enumerate().take(last).skip(first + 1) {
            if group
                .iter()
                .any(|&member| member < reader && reads_cells_of(&step.cells, &steps[member]))
            {
                return Err(EngineError::refused(
                    Rule::Margins,
                    "aggregates of this query over the same rows are protected together as one table with margins, and one of them is also read by another aggregate before the table is complete",
                    "split the query: release the table in one query and aggregate over it in another",
                ));
            }
        }
    }
    Ok(groups)
}

fn reads_cells_of(plan: &LogicalPlan, step: &ReleaseStep) -> bool {
    let name = step.table_name();
    let mut found = false;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.table() == name
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

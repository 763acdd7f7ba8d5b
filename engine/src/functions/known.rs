//! DataFusion's aggregate functions as seuil's rules tell them apart,
//! resolved once from a call's name: the rules and the cells plan match on
//! this enum, not on function names.

use datafusion::logical_expr::expr::AggregateFunction;

/// An aggregate function the rules know, or [`KnownAggregate::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KnownAggregate {
    /// `count`.
    Count,
    /// `sum`.
    Sum,
    /// `avg` (or its alias `mean`).
    Avg,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `median`.
    Median,
    /// `bool_and`: the minimum of booleans.
    BoolAnd,
    /// `bool_or`: the maximum of booleans.
    BoolOr,
    /// `grouping(...)`, which names a cell's margin.
    Grouping,
    /// Any other aggregate function.
    Other,
}

impl KnownAggregate {
    /// The function of an aggregate call.
    pub fn of(function: &AggregateFunction) -> Self {
        Self::named(function.func.name())
    }

    /// The function of this name (DataFusion's lower-case names).
    pub fn named(name: &str) -> Self {
        match name {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "avg" | "mean" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            "median" => Self::Median,
            "bool_and" => Self::BoolAnd,
            "bool_or" => Self::BoolOr,
            "grouping" => Self::Grouping,
            _ => Self::Other,
        }
    }

    /// MIN, MAX, MEDIAN and their boolean forms: each releases a value one
    /// person holds.
    pub fn is_order_statistic(self) -> bool {
        matches!(
            self,
            Self::Min | Self::Max | Self::Median | Self::BoolAnd | Self::BoolOr
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_to_one_function() {
        assert_eq!(KnownAggregate::named("mean"), KnownAggregate::Avg);
        assert_eq!(KnownAggregate::named("avg"), KnownAggregate::Avg);
        assert_eq!(KnownAggregate::named("stddev"), KnownAggregate::Other);
        assert!(KnownAggregate::named("bool_or").is_order_statistic());
        assert!(!KnownAggregate::named("sum").is_order_statistic());
    }
}

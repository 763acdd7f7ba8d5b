//! What each function a query may use can do with the data: never fail,
//! fail only on arguments that must then be literals in a safe range, fail
//! on some data values (and so run under a guard, see [`super::guards`]),
//! or grow its output with its inputs (and so run under a size bound).
//!
//! The table was drawn from DataFusion 55's own code, function by function:
//! where a kernel returns an error or panics for some argument values, the
//! function is listed here with what makes it safe.

/// How a scalar function is made safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// It never fails on data (for the argument types it is planned with).
    Total,
    /// It fails for some values of its arguments: it runs under a guard
    /// that gives NULL instead ([`super::guards`]).
    Guarded,
    /// Its output grows with its inputs: it runs under a bound on the
    /// output's size ([`super::guards`]).
    Grows,
}

/// A constraint on a literal argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literal {
    /// Any literal.
    Any,
    /// A literal integer in this range.
    Between(i64, i64),
    /// A literal integer other than zero.
    NonZero,
    /// A literal string of at most this many bytes.
    ShortText(usize),
}

/// The longest value a function that grows its output may produce, in
/// bytes; longer values are NULL. 8,192 rows of such values still fit well
/// within one Arrow string array.
pub const MAX_VALUE_BYTES: i64 = 16 * 1024;

/// The widest padding of `lpad` and `rpad`: their kernels reserve the width
/// for every row before looking at the data.
pub const MAX_PAD: i64 = 1024;

/// A scalar function a query may use.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    /// DataFusion's name.
    pub name: &'static str,
    /// How it is made safe.
    pub safety: Safety,
    /// Arguments (zero-based) that must be literals, and what they may be.
    pub literals: &'static [(usize, Literal)],
}

const fn total(name: &'static str) -> Function {
    Function {
        name,
        safety: Safety::Total,
        literals: &[],
    }
}

const fn with_literals(
    name: &'static str,
    safety: Safety,
    literals: &'static [(usize, Literal)],
) -> Function {
    Function {
        name,
        safety,
        literals,
    }
}

const DATE_PART: &[(usize, Literal)] = &[(0, Literal::ShortText(32))];
const PAD: &[(usize, Literal)] = &[
    (1, Literal::Between(0, MAX_PAD)),
    (2, Literal::ShortText(64)),
];

/// The scalar functions a query may use.
pub const SCALAR_FUNCTIONS: &[Function] = &[
    // numbers
    with_literals("abs", Safety::Guarded, &[]),
    total("ceil"),
    total("floor"),
    with_literals("round", Safety::Total, &[(1, Literal::Between(-38, 38))]),
    with_literals("trunc", Safety::Total, &[(1, Literal::Between(-38, 38))]),
    total("signum"),
    with_literals("sqrt", Safety::Guarded, &[]),
    total("cbrt"),
    total("exp"),
    total("ln"),
    with_literals("log", Safety::Total, &[(0, Literal::Any)]),
    total("log2"),
    total("log10"),
    total("pi"),
    total("greatest"),
    total("least"),
    total("isnan"),
    total("iszero"),
    total("nanvl"),
    // null handling and conditionals
    total("coalesce"),
    total("nullif"),
    total("nvl"),
    total("nvl2"),
    total("ifnull"),
    // text
    total("lower"),
    total("upper"),
    total("trim"),
    total("btrim"),
    total("ltrim"),
    total("rtrim"),
    total("length"),
    total("char_length"),
    total("character_length"),
    total("octet_length"),
    total("bit_length"),
    with_literals("concat", Safety::Grows, &[]),
    with_literals("concat_ws", Safety::Grows, &[]),
    total("left"),
    total("right"),
    with_literals(
        "substr",
        Safety::Guarded,
        &[(2, Literal::Between(0, i64::MAX))],
    ),
    with_literals(
        "substring",
        Safety::Guarded,
        &[(2, Literal::Between(0, i64::MAX))],
    ),
    with_literals("lpad", Safety::Total, PAD),
    with_literals("rpad", Safety::Total, PAD),
    with_literals(
        "replace",
        Safety::Grows,
        &[(1, Literal::ShortText(256)), (2, Literal::ShortText(256))],
    ),
    total("starts_with"),
    total("ends_with"),
    total("strpos"),
    total("instr"),
    total("position"),
    with_literals(
        "split_part",
        Safety::Total,
        &[(1, Literal::ShortText(256)), (2, Literal::NonZero)],
    ),
    total("initcap"),
    total("reverse"),
    total("translate"),
    total("contains"),
    // dates
    with_literals("date_part", Safety::Total, DATE_PART),
    with_literals("datepart", Safety::Total, DATE_PART),
    with_literals("date_trunc", Safety::Guarded, DATE_PART),
    with_literals("datetrunc", Safety::Guarded, DATE_PART),
    with_literals("extract", Safety::Total, DATE_PART),
    total("current_date"),
    total("now"),
    total("current_time"),
    total("today"),
];

/// The entry of a scalar function, if it is allowed.
pub fn scalar_function(name: &str) -> Option<&'static Function> {
    SCALAR_FUNCTIONS.iter().find(|f| f.name == name)
}

/// Aggregate functions a query may use. Order statistics and the others are
/// checked again by the rules that release them (rules 2 and 6).
pub const AGGREGATE_FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "min",
    "max",
    "median",
    "stddev",
    "stddev_samp",
    "stddev_pop",
    "var",
    "var_samp",
    "var_pop",
    "bool_and",
    "bool_or",
    "grouping",
];

/// Window functions a query may use (over private rows they must be
/// partitioned by the person, which the lineage rule checks).
pub const WINDOW_FUNCTIONS: &[&str] = &[
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
];

//! A period's last day, as the cost page's form names it: `through`,
//! inclusive, the way a date picker is read (From = Through is one day).
//! Reports, the API and every link read `to`, the day after it
//! (exclusive). The two readings meet only here.

use chrono::NaiveDate;

/// The exclusive `to` of the last day `through` (`YYYY-MM-DD`, spaces
/// around it ignored): `None` when it is not a date, or is the last day
/// there is.
pub fn to_of_through(through: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(through.trim(), "%Y-%m-%d")
        .ok()?
        .succ_opt()
}

/// The last day of a period ending before `to` (exclusive): the day
/// before it.
pub fn through_of_to(to: NaiveDate) -> NaiveDate {
    to.pred_opt().unwrap_or(to)
}

/// The form's last day for a `to` as sent: the day before it when it is a
/// date, else the text as it was (so the form shows what was refused).
pub fn through_of_sent_to(to: &str) -> String {
    NaiveDate::parse_from_str(to.trim(), "%Y-%m-%d")
        .map_or_else(|_| to.to_string(), |d| through_of_to(d).to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_day_through_is_the_next_midnight_and_back() {
        let to = to_of_through(" 2026-12-05 ").unwrap();
        assert_eq!(to.to_string(), "2026-12-06");
        assert_eq!(through_of_to(to).to_string(), "2026-12-05");
        assert_eq!(through_of_sent_to("2026-03-01"), "2026-02-28");
        assert_eq!(through_of_sent_to("yesterday"), "yesterday");
        assert_eq!(to_of_through("2026-02-30"), None);
        assert_eq!(to_of_through(&NaiveDate::MAX.to_string()), None);
    }
}

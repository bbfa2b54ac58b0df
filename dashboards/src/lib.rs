//! Dashboards: placeholder, filled by the dashboard work.

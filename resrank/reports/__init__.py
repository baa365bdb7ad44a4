"""Tables, figures and reports, all derived from the DAG's metric and stats files."""

"""The end-to-end benchmark (`glimp bench`): routing systems over a real Triton server and an
emulated link, their records, report, plots and the issue's targets; `cloud_figures` measures the
cloud's own figures."""

"""AutoML jobs (`type: automl`): their data (MLTable folders) and their search through FLAML."""

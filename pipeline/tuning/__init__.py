"""The only door to Optuna: storages, the objective, a study run, the commands around it."""

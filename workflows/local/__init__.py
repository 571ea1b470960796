"""Running a policy's pipelines on this machine, each step a local process: the runner
(:mod:`~workflows.local.runner`, ``snapflow run --local``), the local restore
(:mod:`~workflows.local.local_restore`, ``snapflow restore --local``) and the terminal view
(:mod:`~workflows.local.view`). The demo and its servers are in :mod:`workflows.demo`."""

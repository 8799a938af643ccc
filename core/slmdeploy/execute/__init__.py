"""Running a plan: each step's output is found in the content-addressed cache or made (in a worker process
when it is heavy), published into ``build/<variant>/``, and judged against the gates.

How the distinct steps of one level run side by side is an executor's job (`executors`)."""

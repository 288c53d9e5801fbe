"""The user's tools: `python -m scripts.verify {run,compare,soak,overload}`.

cli.py holds the one parser; flags.py the flags the subcommands share; core/ the parts every
subcommand runs on (targets, sampling, timeline, verdict, report); soak/ and overload/ their
families. The instruments that decided this service's own design live in lab/.
"""

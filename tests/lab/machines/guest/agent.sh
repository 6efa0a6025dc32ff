#!/bin/bash
# The machine lab's command channel, run by fpl-agent.service: the host drops <id>.sh into
# /xfer/q (written elsewhere, then renamed in); this runs each once, in the background, and
# leaves <id>.out, <id>.err and last <id>.rc (renamed in, so a present rc means all is there).
# The 0.2 s rest is a read that times out on a pipe nobody writes, not sleep(1): a fork and
# exec five times a second cost the idle machine about a twentieth of its CPU under TCG.
q=/xfer/q
mkdir -p $q
exec {rest}<> <(:)
cut -d' ' -f1 /proc/uptime > /xfer/agent-up
while :; do
    for f in $q/*.sh; do
        [ -e "$f" ] || continue
        id=${f%.sh}
        mv "$f" "$id.run" 2>/dev/null || continue
        (
            cd /root
            bash "$id.run" > "$id.out" 2> "$id.err" < /dev/null
            echo $? > "$id.rc.tmp"
            mv "$id.rc.tmp" "$id.rc"
        ) &
    done
    read -r -t 0.2 -u "$rest" || :
done

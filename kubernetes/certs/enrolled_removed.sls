# -*- coding: utf-8 -*-
# vim: ft=sls
{#- kubernetes.certs.enrolled_removed: take away what kubernetes.certs.enrolled
    may lay down, for every role (a host that was a master and became a node
    keeps nothing of its master's share): each member's certificate and key,
    the CA certificates and the kubeconfigs pointing at enrolled pairs (in a
    seed set also the admin pair a master received and the CA in the trust
    store: kubernetes.certs.removed).  Folders stay.  The
    master keeps its copies of the certificates it signed
    (<set>/enrolled/<minion>/); to stop signing for this host, remove it from
    the set (docs/enrollment.md). #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/certs/enrolled.jinja' import enrolled with context %}
{%- if enrolled.layout_files %}
{#- A seed host: the seed layout's files, the trust store's CA included, go
    the way kubernetes.certs.removed takes them; the rest below. #}

include:
  - {{ tplroot }}.certs.removed
{%- endif %}
{%- set paths = [] %}
{%- for _, path, _ in enrolled.kubeconfigs %}
{%-   do paths.append(path) %}
{%- endfor %}
{%- for member, files in enrolled.paths | dictsort %}
{%-   do paths.extend([files.cert, files.key, files.ca]) %}
{%- endfor %}
{%- for _, file, _ in enrolled.all_pillar_pairs %}
{%-   do paths.append(file.path) %}
{%- endfor %}

{%- for path in paths | unique | sort if path not in enrolled.layout_files %}

kubernetes-certs-enrolled-removed-{{ path | replace('/', '-') | replace('.', '-') | trim('-') }}-file-absent:
  file.absent:
    - name: {{ path | json }}
{%- endfor %}

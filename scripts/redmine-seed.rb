# scripts/redmine-seed.rb -- seed a local Redmine 5.0 for mailgate's tests.
#
# Run from the Redmine root (done by scripts/redmine-local):
#   cd /usr/share/redmine && BUNDLER_VERSION=2.3.15 \
#     bundle exec rails runner -e production /path/to/redmine-seed.rb
#
# Idempotent (find-or-create / overwrite).  Removes Redmine's default
# statuses/trackers/roles (only while no issue uses them) so the instance has
# exactly mailgate's workflow.  Prints only a short summary, to stderr.
#
# Result (names are the contract; ids are deterministic when seeded on a fresh
# DB, which scripts/redmine-local always does):
#   statuses   Open, Needs information, Answered, Solved*, Expired*, Invalid*  (*closed)
#   tracker    Support (default status Open, all statuses, all core fields)
#   roles      Requester (its status changes only on its own issues:
#              :edit_own_issues; the built-in Non member role gets the same, for the
#              accounts unknown_senders: create makes), Support (:edit_issues), Manager (no members: it only exists
#              so that admin -- whose allowed transitions are the union of ALL
#              roles' workflows in Redmine 5 -- may move issues to Expired/Invalid)
#   fields     discord-thread (bool), discord-thread-id (string), reporter-email (string)
#              and participants (text; these two seen by Support and Manager only); issue fields,
#              all projects, tracker Support, visible
#   projects   site-a, site-b, triage (public, tracker Support, issue_tracking)
#   users      admin, owner, support, other, gateway, locked; password 'password123'
#   API keys   admin 0000000000000000000000000000000000000a11
#              owner 0000000000000000000000000000000000000011
#              support 0000000000000000000000000000000000000022
#              other 0000000000000000000000000000000000000033
#              gateway 0000000000000000000000000000000000000044
#   settings   REST API on; mail handler API on, key 'mailhandler-key';
#              no notified events (no mail)

def say(msg)
  $stderr.puts "[redmine-seed] #{msg}"
end

PASSWORD = 'password123'

ActiveRecord::Base.transaction do
  # ---------------------------------------------------------------- settings
  Setting.rest_api_enabled = '1'
  Setting.mail_handler_api_enabled = '1'
  Setting.mail_handler_api_key = 'mailhandler-key'
  Setting.notified_events = []
  Setting.default_language = 'en'
  Setting.default_projects_modules = ['issue_tracking']

  # issues need a priority (Redmine's default data has them; make sure)
  if IssuePriority.where(active: true).none?
    %w[Low Normal High Urgent Immediate].each_with_index do |n, i|
      IssuePriority.create!(name: n, position: i + 1, is_default: n == 'Normal', active: true)
    end
  end

  # ---------------------------------------------------------------- statuses
  STATUSES = [
    ['Open', false],
    ['Needs information', false],
    ['Answered', false],
    ['Solved', true],
    ['Expired', true],
    ['Invalid', true],
  ]
  wanted = STATUSES.map(&:first)

  # Redmine's default data (loaded by Debian's postinst): drop what is unused.
  Tracker.where.not(name: 'Support').each do |t|
    if Issue.where(tracker_id: t.id).exists?
      say "keeping tracker #{t.name} (has issues)"
    else
      t.destroy
    end
  end
  # the default Support tracker may still point at a default status
  support_tracker = Tracker.find_by(name: 'Support')

  statuses = {}
  STATUSES.each_with_index do |(name, closed), i|
    s = IssueStatus.find_or_initialize_by(name: name)
    s.is_closed = closed
    s.save!
    statuses[name] = s
  end
  if support_tracker
    support_tracker.default_status = statuses['Open']
    support_tracker.save!
  end
  IssueStatus.where.not(name: wanted).each do |s|
    if Issue.where(status_id: s.id).exists? || Tracker.where(default_status_id: s.id).exists?
      say "keeping status #{s.name} (in use)"
    else
      WorkflowTransition.where(old_status_id: s.id).or(WorkflowTransition.where(new_status_id: s.id)).delete_all
      s.destroy
    end
  end
  STATUSES.each_with_index do |(name, _), i|
    s = statuses[name].reload
    s.update_column(:position, i + 1) if s.position != i + 1
  end

  # ----------------------------------------------------------------- tracker
  support_tracker ||= Tracker.new(name: 'Support')
  support_tracker.default_status = statuses['Open']
  support_tracker.core_fields = Tracker::CORE_FIELDS
  support_tracker.save!

  # ------------------------------------------------------------------- roles
  Role.where(builtin: 0).where.not(name: %w[Requester Support Manager]).each do |r|
    if r.members.any?
      say "keeping role #{r.name} (has members)"
    else
      r.destroy
    end
  end

  def role(name, perms)
    r = Role.find_or_initialize_by(name: name, builtin: 0)
    r.permissions = perms
    r.issues_visibility = 'all'
    r.assignable = true
    r.save!
    r
  end

  base_perms = [:view_issues, :add_issues, :add_issue_notes, :view_issue_watchers]
  # Redmine 5 lets a user change the status only with :edit_issues, or with
  # :edit_own_issues on an issue they authored.  Requester gets the latter:
  # its transitions work on the requester's own tickets only (mailgate's
  # "owner"); on someone else's ticket a status change is silently dropped.
  requester = role('Requester', base_perms + [:edit_own_issues])
  support = role('Support', base_perms + [:edit_issues, :set_notes_private, :view_private_notes,
                                          :add_issue_watchers])
  manager = role('Manager', base_perms + [:edit_issues, :set_notes_private, :view_private_notes,
                                          :add_issue_watchers, :delete_issues, :manage_members])

  # --------------------------------------------------------------- workflows
  WorkflowTransition.where(tracker_id: support_tracker.id).delete_all
  # Workflows of other (kept) trackers/roles are left alone.
  def allow(role, tracker, statuses, pairs)
    pairs.each do |from, to|
      WorkflowTransition.create!(role_id: role.id, tracker_id: tracker.id,
                                 old_status_id: statuses.fetch(from).id,
                                 new_status_id: statuses.fetch(to).id,
                                 author: false, assignee: false)
    end
  end
  # Accounts mailgate makes for strangers (unknown_senders: create) are members of
  # no project: Redmine's built-in Non member role gives them the Requester's rights,
  # so that they may confirm or reopen their own tickets by mail.
  non_member = Role.non_member
  non_member.permissions = (non_member.permissions + base_perms + [:edit_own_issues]).uniq
  non_member.save!
  requester_pairs = [
    ['Needs information', 'Open'],
    ['Answered', 'Open'],
    ['Expired', 'Open'],
    ['Solved', 'Open'],
    ['Open', 'Solved'],
    ['Needs information', 'Solved'],
    ['Answered', 'Solved'],
  ]
  allow(non_member, support_tracker, statuses, requester_pairs)
  # Nothing -> Expired / Invalid for Requester or Support: only admin may.
  allow(requester, support_tracker, statuses, requester_pairs)
  allow(support, support_tracker, statuses, [
    ['Open', 'Needs information'],
    ['Open', 'Answered'],
    ['Needs information', 'Answered'],
    ['Answered', 'Needs information'],
  ])
  # Manager: everything -> everything (no member has it; admin gets it).
  all_pairs = wanted.product(wanted).reject { |a, b| a == b }
  allow(manager, support_tracker, statuses, all_pairs)

  # ----------------------------------------------------------- custom fields
  def issue_cf(name, format, tracker, seen_by: nil)
    cf = IssueCustomField.find_or_initialize_by(name: name)
    cf.field_format = format
    cf.is_for_all = true
    # seen_by: only these roles (and admins) see the field: a reporter's address is
    # not for everyone who can read a public project.
    cf.visible = seen_by.nil?
    cf.is_required = false
    cf.is_filter = true
    cf.searchable = false if cf.respond_to?(:searchable=)
    cf.editable = true if cf.respond_to?(:editable=)
    cf.role_ids = (seen_by || []).map(&:id) if cf.respond_to?(:role_ids=)
    cf.tracker_ids = [tracker.id]
    cf.edit_tag_style = 'check_box' if format == 'bool' && cf.respond_to?(:edit_tag_style=)
    cf.save!
    cf
  end
  cf_thread = issue_cf('discord-thread', 'bool', support_tracker)
  cf_thread_id = issue_cf('discord-thread-id', 'string', support_tracker)
  # The address that opened a ticket when its sender is not a Redmine user, and the
  # first mail's Cc: (mailgate's redmine.reporter_field / participants_field).
  issue_cf('reporter-email', 'string', support_tracker, seen_by: [support, manager])
  issue_cf('participants', 'text', support_tracker, seen_by: [support, manager])

  # ---------------------------------------------------------------- projects
  projects = %w[site-a site-b triage].map do |ident|
    p = Project.find_or_initialize_by(identifier: ident)
    p.name = ident
    p.is_public = true
    p.save!
    p.enabled_module_names = ['issue_tracking']
    p.tracker_ids = [support_tracker.id]
    p.save!
    p
  end

  # ------------------------------------------------------------------- users
  def set_user(login, mail:, first:, last:, status: User::STATUS_ACTIVE, admin: false)
    u = User.find_by(login: login) || User.new
    u.login = login
    u.firstname = first
    u.lastname = last
    u.mail = mail
    u.admin = admin
    u.status = status
    u.language = 'en'
    u.mail_notification = 'none'
    u.must_change_passwd = false
    u.password = PASSWORD
    u.password_confirmation = PASSWORD
    u.save!
    u.pref.no_self_notified = true if u.pref.respond_to?(:no_self_notified=)
    u.pref.save!
    u
  end

  users = {}
  users['admin'] = set_user('admin', mail: 'admin@example.org', first: 'Redmine', last: 'Admin', admin: true)
  users['owner'] = set_user('owner', mail: 'owner@example.org', first: 'Olive', last: 'Owner')
  users['support'] = set_user('support', mail: 'support@example.org', first: 'Sam', last: 'Support')
  users['other'] = set_user('other', mail: 'other@example.org', first: 'Oscar', last: 'Other')
  users['gateway'] = set_user('gateway', mail: 'mailgate@example.org', first: 'Mail', last: 'Gateway')
  users['locked'] = set_user('locked', mail: 'locked@example.org', first: 'Lou', last: 'Locked',
                             status: User::STATUS_LOCKED)

  KEYS = {
    'admin' => '0000000000000000000000000000000000000a11',
    'owner' => '0000000000000000000000000000000000000011',
    'support' => '0000000000000000000000000000000000000022',
    'other' => '0000000000000000000000000000000000000033',
    'gateway' => '0000000000000000000000000000000000000044',
  }
  KEYS.each do |login, key|
    u = users.fetch(login)
    Token.where(user_id: u.id, action: 'api').delete_all
    Token.where(value: key).delete_all
    t = Token.create!(user: u, action: 'api')  # before_create overwrites any given value
    t.update_column(:value, key)
  end

  # ------------------------------------------------------------- memberships
  def member(user, project, roles)
    m = Member.find_or_initialize_by(user_id: user.id, project_id: project.id)
    m.role_ids = roles.map(&:id)
    m.save!
  end
  projects.each do |p|
    member(users['owner'], p, [requester])
    member(users['other'], p, [requester])
    member(users['support'], p, [support])
    member(users['gateway'], p, [support, requester])
  end

  # ----------------------------------------------------------------- summary
  say "statuses: " + IssueStatus.sorted.map { |s| "#{s.id}=#{s.name}#{s.is_closed? ? '*' : ''}" }.join(', ')
  say "tracker: #{support_tracker.id}=#{support_tracker.name}; roles: " +
      [requester, support, manager].map { |r| "#{r.id}=#{r.name}" }.join(', ')
  say "custom fields: #{cf_thread.id}=#{cf_thread.name}, #{cf_thread_id.id}=#{cf_thread_id.name}"
  say "projects: " + projects.map { |p| "#{p.id}=#{p.identifier}" }.join(', ')
  say "users: " + users.map { |l, u| "#{u.id}=#{l}" }.join(', ')
end

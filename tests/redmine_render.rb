# Render texts with Redmine's own code, as its issue page renders a note.
#
#   cd /usr/share/redmine && bundle exec rails runner -e production tests/redmine_render.rb < JOBS
#
# JOBS (JSON): {"jobs": [[FORMATTING, TEXT], ...]}.  Prints one JSON list: for each job,
# {"html": what ApplicationHelper#textilizable makes of TEXT (the formatter, then
# macros, wiki links, Redmine links and mentions), "mentions": the logins Redmine
# would notify as mentioned (Redmine::Acts::Mentionable)}.
#
# Nothing is written: the text formatting is set for this process only, and the
# project the links are made in (with a wiki, so that wiki links are made) is never
# saved.  Used by tests/test_markup.py.
require 'json'

class Renderer
  include ERB::Util
  include ActionView::Helpers
  include Rails.application.routes.url_helpers
  include ApplicationHelper

  def controller; nil; end
  def default_url_options; {only_path: true}; end
end

project = Project.new(identifier: 'markup-probe', name: 'markup probe')
project.enabled_module_names = ['issue_tracking', 'wiki']
project.wiki = Wiki.new(start_page: 'Start')
project.define_singleton_method(:to_param) { identifier }
issue = Issue.new(project: project)
User.current = User.find_by(login: 'admin')

results = JSON.parse($stdin.read)['jobs'].map do |formatting, text|
  Setting.define_singleton_method(:text_formatting) { formatting }
  renderer = Renderer.new
  renderer.instance_variable_set(:@project, project)
  html = renderer.textilizable(text, object: issue, project: project).to_s
  {html: html, mentions: Journal.new.send(:scan_for_mentioned_users, text)}
end
$stdout.write("\n@@RESULTS@@" + JSON.generate(results))
